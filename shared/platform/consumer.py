"""Turns Kafka records into effects: parse, dead-letter what is invalid, retry what failed.

FastStream gives at-most-once by default and no dead-letter topic for Kafka, so
subscribers run with manual acknowledgement and this runner decides, per record:
- invalid bytes or headers (JSON, envelope, schema, unknown type) -> `promotion.dlq`, then commit;
- a valid event its handler refuses as input (InvalidEvent, e.g. an id reused with other content) -> the same;
- a technical fault (database or broker unreachable) -> back off and re-read, forever;
- any other error -> re-read up to `max_attempts` times, then dead-letter with the reason.
The offset is committed only after the handler's transaction (state + outbox) committed.

Records arrive in batches (`Fetched`: the record FastStream delivered and what the consumer had
fetched behind it, up to a limit). A service whose handlers keep all their effects in the
database runs a batch in one transaction (`Together`) and commits the batch's offsets once; when
anything in that transaction fails, nothing of it is kept and the batch is run again record by
record, with the policy above. Other services (the deployer) run a batch record by record, the
records of several keys (promoted services) at once, and commit once.
"""

import asyncio
import time
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from shared.platform import backoff, metrics

from shared.contracts import kafka_binding, topics
from shared.contracts.events import Event, InvalidEvent
from shared.contracts.limits import MAX_CLOCK_SKEW_S
from shared.platform.records import Fetched, Lane, OneRecord, environment_lane, parse_record, rewind, segments

__all__ = ["Fetched", "Handler", "Lane", "Position", "Prepare", "RecordRunner", "Together", "UnitOfWork",
           "environment_lane", "parse_record"]

log = structlog.get_logger()

Position = tuple[str, int, int]
"""(topic, partition, offset) of a record."""


@dataclass
class UnitOfWork:
    """What one handler call works in, handed to it explicitly: the transaction of its batch of records (None: the
    handler opens one per event, through ServiceRuntime.once), the events its batch emitted so far, and the
    position of the record being handled (the ledger keeps it with each entry)."""

    conn: asyncpg.Connection | None = None
    position: Position | None = None
    emitted: list[Event] = field(default_factory=list)


Handler = Callable[[Event, UnitOfWork], Awaitable[None]]
PublishRaw = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[None]]
Together = Callable[[list[Event]], AbstractAsyncContextManager[UnitOfWork]]
"""Opens one transaction in which the handlers of these events run (see ServiceRuntime.together)."""
Prepare = Callable[[list[Event]], Awaitable[None]]
"""Work a handler can do for a whole batch before its transaction opens (intake copies artifacts)."""
TRANSIENT = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.OperatorInterventionError,
             KafkaError, TimeoutError)


class RecordRunner:
    """Runs a handler for each record with the policy above; keeps figures for /health."""

    def __init__(self, consumer_name: str, handler: Handler, publish_raw: PublishRaw, *, max_attempts: int = 5,
                 backoff_base_s: float = 0.1, together: Together | None = None, keys_at_once: int = 1,
                 lane: Lane | None = None, prepare: Prepare | None = None, stuck_after_s: float = 30.0,
                 max_clock_skew_s: float = MAX_CLOCK_SKEW_S) -> None:
        self._max_clock_skew_s = max_clock_skew_s
        self._consumer_name = consumer_name
        self._handler = handler
        self._together = together
        self._prepare = prepare
        self._keys_at_once = keys_at_once
        self._lane = lane
        self._publish_raw = publish_raw
        self._max_attempts = max_attempts
        self._backoff = backoff.waits(backoff_base_s)
        # Failed deliveries per record, kept apart: only handler errors count towards dead-lettering.
        self._failures: dict[tuple[str, int, int], int] = {}
        self._outages: dict[tuple[str, int, int], int] = {}
        self.processed = 0
        self.dead_lettered = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.stuck_after_s = stuck_after_s
        """A handler (or preparation) running longer than this is stuck (/health says degraded)."""
        self._running: dict[object, float] = {}
        """When each handler or preparation now running started (several at once with `keys_at_once`)."""

    async def run(self, message) -> None:
        """Process one FastStream KafkaMessage and acknowledge or re-read it; never raises.

        With manual acknowledgement an exception escaping here would leave the record behind
        while the consumer moves on (a later commit would skip it), so every failure ends in
        a re-read: a dead-letter publish or a commit that fails is retried like an outage.
        """
        record = message.raw_message
        position = (record.topic, record.partition, record.offset)
        structlog.contextvars.bind_contextvars(topic=record.topic, partition=record.partition, offset=record.offset)
        try:
            await self._process(message, record, position)
        except Exception as error:
            outages = self._outages[position] = self._outages.get(position, 0) + 1
            await self._retry_later(message, error, outages, transient=True)

    async def run_batch(self, message) -> None:
        """Process a batch (`Fetched`: each partition's records in offset order) and commit it, or
        keep what is done and read the rest again; never raises (as `run`)."""
        records: Sequence = message.raw_message
        metrics.BATCH_RECORDS.labels(self._consumer_name).observe(len(records))
        try:
            if self._together is not None and await self._run_together(records):
                await message.ack()
                return
            done = [False] * len(records)
            if self._keys_at_once > 1:
                await self._run_by_key(records, done)
            else:
                await self._run_in_order(records, range(len(records)), done)
            if all(done):
                await message.ack()
            else:  # a record backed off already: keep what is done, read the rest again
                await rewind(message.consumer, records, done)
        except Exception as error:  # a commit or seek that failed: read the whole batch again
            position = (records[0].topic, records[0].partition, records[0].offset)
            outages = self._outages[position] = self._outages.get(position, 0) + 1
            await self._retry_later(message, error, outages, transient=True)

    async def _run_in_order(self, records: Sequence, indexes, done: list[bool]) -> None:
        """Run these records one by one, marking each done; stop at the first that must be read again."""
        for index in indexes:
            structlog.contextvars.unbind_contextvars(*_RECORD_CONTEXT)  # the previous record's
            one = OneRecord(records[index])
            await self.run(one)
            done[index] = one.done
            if not one.done:
                return

    async def _run_by_key(self, records: Sequence, done: list[bool]) -> None:
        """Records with one key (one promoted service) in order, up to `keys_at_once` at once; with `lane`, a key's
        records of different lanes (environments) run side by side too, each lane in order, and a record of no
        lane (one about the whole service) waits for those before it and holds back those after it."""
        by_key: dict[bytes | None, list[int]] = {}
        for index, record in enumerate(records):
            by_key.setdefault(record.key, []).append(index)
        room = asyncio.Semaphore(self._keys_at_once)

        async def one_lane(indexes: list[int]) -> None:
            async with room:
                await self._run_in_order(records, indexes, done)

        async def one_key(indexes: list[int]) -> None:
            for segment in segments(records, indexes, self._lane):
                await asyncio.gather(*(one_lane(lane) for lane in segment))
                if not all(done[index] for lane in segment for index in lane):
                    return  # one must be read again: nothing after it in this key runs before it

        await asyncio.gather(*(one_key(indexes) for indexes in by_key.values()))

    async def _run_together(self, records: Sequence) -> bool:
        """Run the handlers of every valid record in one transaction, then dead-letter the invalid ones.

        False when the transaction failed (a handler error, a deadlock, an outage): nothing of it is
        kept and nothing was dead-lettered, so the caller can run the records one by one."""
        assert self._together is not None
        valid: list[tuple[object, Event]] = []
        invalid: list[tuple[object, str]] = []
        for record in records:
            try:
                valid.append((record, self._parse(record.value or b"", record)))
            except InvalidEvent as error:
                invalid.append((record, error.reason))
        started = time.monotonic()
        try:
            if self._prepare is not None and valid:
                await self._timed(self._prepare([event for _, event in valid]))
            async with self._together([event for _, event in valid]) if valid else _nothing() as unit:
                for record, event in valid:
                    structlog.contextvars.bind_contextvars(topic=record.topic, partition=record.partition,
                                                           offset=record.offset)
                    _bind(event)
                    unit.position = (record.topic, record.partition, record.offset)
                    await self._timed(self._handler(event, unit))
        except Exception as error:  # run record by record: that path retries or dead-letters
            log.info("batch.split", records=len(records), error=f"{type(error).__name__}: {error}")
            metrics.BATCHES_SPLIT.labels(self._consumer_name).inc()
            return False
        finally:
            structlog.contextvars.unbind_contextvars(*_RECORD_CONTEXT)
        for record, reason in invalid:
            await self._dead_letter(record, reason)
        for record, event in valid:
            self._forget((record.topic, record.partition, record.offset))
            metrics.EVENTS_HANDLED.labels(self._consumer_name, event.envelope.type).inc()
        if valid:
            metrics.HANDLER_SECONDS.labels(self._consumer_name).observe((time.monotonic() - started) / len(valid))
        self.processed += len(valid)
        self.last_error, self.failing_since = None, None
        return True

    async def _process(self, message, record, position: Position) -> None:
        started = time.monotonic()
        try:
            event = self._parse(message.body, record)
        except InvalidEvent as invalid:
            await self._dead_letter(record, invalid.reason)
            await message.ack()
            return
        _bind(event)
        try:
            await self._timed(self._handler(event, UnitOfWork(position=position)))
        except InvalidEvent as refused:  # valid bytes the handler refuses as input (an id reused with other content)
            await self._dead_letter(record, refused.reason)
            self._forget(position)
            await message.ack()
            return
        except TRANSIENT as error:
            outages = self._outages[position] = self._outages.get(position, 0) + 1
            await self._retry_later(message, error, outages, transient=True)
            return
        except Exception as error:
            failures = self._failures[position] = self._failures.get(position, 0) + 1
            if failures < self._max_attempts:
                await self._retry_later(message, error, failures, transient=False)
                return
            log.exception("event.handler_failed", attempts=failures)
            await self._dead_letter(record, f"handler failed {failures} times: {type(error).__name__}: {error}")
            self._forget(position)
            await message.ack()
            return
        self._forget(position)
        self.processed += 1
        metrics.EVENTS_HANDLED.labels(self._consumer_name, event.envelope.type).inc()
        metrics.HANDLER_SECONDS.labels(self._consumer_name).observe(time.monotonic() - started)
        self.last_error, self.failing_since = None, None
        await message.ack()

    async def _timed(self, work: Awaitable[None]) -> None:
        """Await a handler's or a preparation's work, keeping when it started for `running_for`."""
        token = object()
        self._running[token] = time.monotonic()
        try:
            await work
        finally:
            del self._running[token]

    def running_for(self, now: float) -> float:
        """Seconds the longest-running handler or preparation has been at it (0 when none runs)."""
        return now - min(self._running.values(), default=now)

    def _parse(self, value: bytes, record) -> Event:
        """The record's event: on its topic, under its service's key, not from the future (else InvalidEvent)."""
        return parse_record(record, value, self._max_clock_skew_s)

    def _forget(self, position: tuple[str, int, int]) -> None:
        self._failures.pop(position, None)
        self._outages.pop(position, None)

    async def _retry_later(self, message, error: Exception, attempt: int, *, transient: bool) -> None:
        """Back off (exponentially, capped at 5 s), then seek back so the same record is read again."""
        self.last_error = f"{type(error).__name__}: {error}"
        metrics.EVENTS_RETRIED.labels(self._consumer_name, str(transient).lower()).inc()
        self.failing_since = self.failing_since or time.monotonic()
        delay = backoff.delay(self._backoff, attempt)

        log.warning("event.retry", error=self.last_error, attempt=attempt, transient=transient, retry_in=delay)
        await asyncio.sleep(delay)
        await message.nack()

    async def _dead_letter(self, record, reason: str) -> None:
        """Publish the original bytes to the dead-letter topic with where they came from and why, keeping the
        record's ce_ and content-type headers (in binary mode the envelope is in them)."""
        kept, altered = kafka_binding.dead_letter_headers(record.headers)
        headers = {
            **kept,
            "dlq.reason": reason[:2000],
            "dlq.topic": record.topic,
            "dlq.partition": str(record.partition),
            "dlq.offset": str(record.offset),
            "dlq.consumer": self._consumer_name,
            "dlq.at": datetime.now(UTC).isoformat(),
        }
        if altered:  # the dead letter cannot be resubmitted as the record was
            headers["dlq.headers-altered"] = ", ".join(altered)
        await self._publish_raw(topics.DLQ, record.key, record.value or b"", headers)
        self.dead_lettered += 1
        metrics.EVENTS_DEAD_LETTERED.labels(self._consumer_name).inc()
        log.warning("event.dead_lettered", reason=reason)


@asynccontextmanager
async def _nothing():
    yield UnitOfWork()


_RECORD_CONTEXT = ("topic", "partition", "offset", "event_id", "event_type", "correlation_id", "env", "artifact")


def _bind(event: Event) -> None:
    """Bind the event's identity to every log line written while it is handled."""
    data = event.data
    version = getattr(data, "version", None)
    structlog.contextvars.bind_contextvars(
        event_id=event.id,
        event_type=event.envelope.type,
        correlation_id=event.correlation_id,
        env=getattr(data, "env", None),
        artifact=f"{data.service}:{version}" if version else data.service,
    )
