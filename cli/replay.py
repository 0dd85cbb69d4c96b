"""`promote replay`: fold the topics into fresh ledger projections, compare them with the live ones, and replace them.

The replay runs in one transaction holding the ledger's chain lock, which the ledger takes
for every append: while it runs the ledger waits, so the live state and the positions it has
read stand still. Each partition is read from its beginning up to the last record the ledger
had handled (see `KafkaLog.plan`); why that gives the live state is in services/ledger/rebuild.py.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Annotated

import asyncpg
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.errors import CliError
from services.ledger import rebuild, repository
from services.ledger.state import state_digest
from services.ledger.topics import consumed_topics
from shared.platform.client import partitions_of, read_range, start_client
from shared.platform import inbox
from shared.platform.consumer import parse_record
from shared.contracts.limits import MAX_CLOCK_SKEW_S
from shared.platform.credentials import database_dsn, kafka_options, redacted
from shared.contracts.events import Event, InvalidEvent
from shared.platform.settings import Settings

LEDGER = "ledger"  # the ledger's schema and consumer group
STALL_S = 30.0
BATCH = 500


@dataclass
class Counts:
    """What the replay read and what it did with it."""

    records: int = 0
    events: int = 0
    invalid: int = 0
    duplicates: int = 0
    failed: int = 0


@dataclass
class ReplayReport(Counts):
    """The figures of one replay."""

    entries: int = 0
    seconds: float = 0.0
    events_per_s: float = 0.0
    live_digest: str = ""
    rebuilt_digest: str = ""
    identical: bool = False
    complete: bool = False
    replaced: bool = False


class KafkaLog:
    """Reads the ledger's topics from their beginning up to a last offset per partition, without a group."""

    def __init__(self, settings: Settings) -> None:
        self._bootstrap = settings.kafka_bootstrap
        self._options = kafka_options(settings, LEDGER)  # the ledger's own principal: it reads what the ledger reads
        self._consumer = AIOKafkaConsumer(**self._options, enable_auto_commit=False,
                                          max_partition_fetch_bytes=4 * 1024 * 1024)
        self._partitions: list[TopicPartition] = []
        self._first: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> "KafkaLog":
        await start_client(self._consumer, self._bootstrap)
        try:
            self._partitions = await partitions_of(self._consumer, consumed_topics())
            # Asked before the ledger is paused: the first offset request is slow and these do not move.
            self._first = await self._consumer.beginning_offsets(self._partitions)
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._consumer.stop()

    async def plan(self, recorded: dict[tuple[str, int], int]) -> dict[TopicPartition, tuple[int, int]]:
        """(first, last) offset to read per partition: up to what the ledger has handled, inclusive."""
        first = self._first
        end = await self._consumer.end_offsets(self._partitions)
        committed = await self._committed(self._partitions)
        plan = {}
        for tp in self._partitions:
            # The last position recorded in an entry covers the moment between the ledger's commit
            # and its offset commit; the group's committed offset covers entries older than
            # migration 002 (no position) and records the ledger handled without an entry.
            last = max(recorded.get((tp.topic, tp.partition), -1), committed.get(tp, 0) - 1)
            last = min(last, end[tp] - 1)
            if last >= first[tp]:
                plan[tp] = (first[tp], last)
        return plan

    async def _committed(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The ledger group's committed offsets (the next record it will read)."""
        admin = AIOKafkaAdminClient(**self._options)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(LEDGER, partitions=partitions)
        finally:
            await admin.close()
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def records(self, plan: dict[TopicPartition, tuple[int, int]]) -> AsyncIterator:
        """Every record of the plan, each partition in offset order."""
        async for record in read_range(self._consumer, plan, STALL_S):
            yield record


async def replay_ledger(settings: Settings, *, replace: bool,
                        progress: Callable[[int, int], None] = lambda done, total: None) -> ReplayReport:
    """Rebuild the projections in a scratch schema, compare digests, and (if `replace`) swap the rows in."""
    started = time.monotonic()
    report = ReplayReport()
    conn = await _connect(settings)
    try:
        async with KafkaLog(settings) as log, conn.transaction():
            await repository.lock_chain(conn)  # from here on the ledger waits
            report.live_digest = await state_digest(conn)
            report.entries = await conn.fetchval("select count(*) from entries")
            plan = await log.plan(await rebuild.recorded_positions(conn))
            total = sum(last - first + 1 for first, last in plan.values())
            await rebuild.create_scratch(conn)
            await _fold_all(conn, log.records(plan), report, lambda: progress(report.records, total),
                            settings.max_clock_skew_s)
            report.rebuilt_digest = await state_digest(conn)
            # Every entry is one event the ledger folded; a count that differs means the topics no longer
            # hold what the ledger recorded (or its offsets are lost), and the rebuilt state would be wrong.
            report.complete = report.events == report.entries
            if replace and report.complete:
                await rebuild.replace_live(conn)
                report.replaced = True
            await rebuild.drop_scratch(conn)
    finally:
        await conn.close()
    report.seconds = round(time.monotonic() - started, 3)
    report.events_per_s = round(report.events / report.seconds, 1) if report.seconds else 0.0
    report.identical = report.live_digest == report.rebuilt_digest
    return report


async def _fold_all(conn: asyncpg.Connection, records: AsyncIterator, counts: Counts, tick: Callable[[], None],
                    max_skew_s: float = MAX_CLOCK_SKEW_S) -> None:
    """Parse each record as the ledger does and fold the first occurrence of each valid event (by inbox identity;
    a later one with other content was dead-lettered by the ledger, as invalid input)."""
    seen: dict[tuple[str, str, str], str] = {}
    batch: list[Event] = []
    async for record in records:
        counts.records += 1
        tick()
        try:
            event = parse_record(record, max_skew_s=max_skew_s)
        except InvalidEvent:  # the ledger dead-lettered it
            counts.invalid += 1
            continue
        identity, digest = inbox.identity(event), inbox.content_digest(event)
        known = seen.get(identity)
        if known is not None:  # the ledger's inbox ignored it (same content), or refused it (other content)
            if known == digest:
                counts.duplicates += 1
            else:
                counts.invalid += 1
            continue
        seen[identity] = digest
        batch.append(event)
        if len(batch) == BATCH:
            await _fold(conn, batch, counts)
            batch = []
    if batch:
        await _fold(conn, batch, counts)


async def _fold(conn: asyncpg.Connection, batch: list[Event], counts: Counts) -> None:
    failed = await rebuild.fold(conn, batch)
    counts.failed += failed
    counts.events += len(batch) - failed


async def _connect(settings: Settings) -> asyncpg.Connection:
    dsn = database_dsn(settings, LEDGER)  # the replay writes the ledger's projections: as the ledger
    try:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": LEDGER}, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        raise CliError(f"cannot reach PostgreSQL at {redacted(dsn)} ({error}); "
                       "is the stack up? ./dev-stack up") from None
    if not await conn.fetchval("select to_regclass('ledger.entries') is not null"):
        await conn.close()
        raise CliError("the ledger has no data yet (is the ledger service running? ./dev-stack status)")
    return conn


def replay(replace: bool = False, as_json: bool = False) -> None:
    """Rebuild the ledger's projections from the topics and compare them with the live ones (exit 1 if different)."""
    progress = Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TextColumn("records"),
                        TimeElapsedColumn(), console=Console(stderr=True), disable=as_json)
    task = progress.add_task("replay", total=None)
    with progress:
        report = asyncio.run(replay_ledger(
            Settings(), replace=replace, progress=lambda done, total: progress.update(task, completed=done,
                                                                                       total=total)))
    if as_json:
        print(json.dumps(asdict(report), indent=2))
    else:
        _print(report)
    if not (report.identical and report.complete):
        raise typer.Exit(1)


def _print(report: ReplayReport) -> None:
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"replayed {report.records} records: {report.events} events folded, {report.invalid} invalid, "
                  f"{report.duplicates} duplicates, {report.failed} failed; the ledger has {report.entries} entries")
    console.print(f"{report.seconds:.2f} s, {report.events_per_s:.0f} events/s")
    console.print(f"live state      {report.live_digest}")
    console.print(f"rebuilt state   {report.rebuilt_digest}")
    if not report.complete:
        console.print(f"[red]MISMATCH[/]: {report.events} events replayed for {report.entries} ledger entries; "
                      "the live projections were left as they were")
    if report.identical:
        verdict = "[green]identical[/]" + (": live projections rebuilt from the topics" if report.replaced else "")
    else:
        verdict = "[red]DIFFERENT[/]" + (": the live projections now hold the rebuilt state" if report.replaced
                                         else ": live projections left as they were (--rebuild replaces them)")
    console.print(verdict)
