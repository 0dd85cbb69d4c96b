"""A batch of promotions that pass every gate on their own (noop driver), and what it left behind.

Used by the crash, infrastructure-fault and scale-out tests: run the same batch with and
without faults, then compare what each run produced, normalised by the batch index.
"""

import asyncio
import hashlib
import json
import time
import uuid
from shared.platform.credentials import READER, database_dsn
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

import devstack

from cli.ops import pipeline_applied
from shared.contracts import topics
from shared.platform.client import EventWatcher, Publisher, group_lag
from shared.contracts.events import Artifact, BuildCompleted, new_event
from shared.contracts.pipeline import parse_pipeline
from shared.platform.settings import Settings

ENVS = ("dev", "test", "staging", "prod")
AUTO_PIPELINE = """
service: {service}
environments:
  - {{name: dev, driver: noop, config: {{APP_ENV: dev}}}}
  - {{name: test, driver: noop, config: {{APP_ENV: test}}}}
  - {{name: staging, driver: noop, config: {{APP_ENV: staging}}}}
  - {{name: prod, driver: noop, config: {{APP_ENV: prod}}}}
"""


@dataclass
class BatchResult:
    """What one run produced, keyed by batch index so that two runs compare."""

    seconds: float
    events: int
    verified_in_prod: int
    starts: dict[tuple[int, str], list[str]]
    final_state: dict[tuple[int, str], tuple[str, str, str]]

    def duplicates(self) -> dict[tuple[int, str], list[str]]:
        """Slots whose driver was called more than once for one digest."""
        return {slot: digests for slot, digests in self.starts.items() if len(digests) != len(set(digests))}


class Batch:
    """`size` services, one release each, through dev, test, staging and prod."""

    def __init__(self, settings: Settings, dist: Path, size: int, label: str) -> None:
        self.settings, self.size = settings, size
        self.run = f"{label}-{uuid.uuid4().hex[:6]}"
        self.dist = settings.drop_dir / "e2e" / dist.name / self.run  # intake reads only under its roots
        self.services = [f"b-{self.run}-{i:03d}" for i in range(size)]
        self.published = asyncio.Event()
        """Set once every pipeline and build was acknowledged by the broker (a fault injected later hits the
        services, not this publisher)."""

    def artifacts(self) -> list[tuple[Path, str]]:
        """One small file per index; the same index gives the same bytes (and digest) in every run."""
        self.dist.mkdir(parents=True, exist_ok=True)
        made = []
        for i in range(self.size):
            path = self.dist / f"artifact-{i:03d}"
            path.write_bytes(f"batch artifact {i}\n".encode() * 8)
            made.append((path, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()))
        return made

    async def run_through(self, watcher: EventWatcher, timeout: float) -> float:
        """Publish pipelines and builds, then wait until every release is verified in prod."""
        t0 = time.monotonic()
        async with Publisher(self.settings) as publisher:
            for service in self.services:
                definition = parse_pipeline(AUTO_PIPELINE.format(service=service))
                await publisher.publish(new_event(pipeline_applied(definition, "batch"), source="/tests/batch"))
            for service, (path, digest) in zip(self.services, self.artifacts(), strict=True):
                build = BuildCompleted(service=service, version="1.0.0",
                                       artifact=Artifact(kind="file", uri=path.as_uri(), digest=digest),
                                       commit="batch", author="ci", checks={})
                await publisher.publish(new_event(build, source="/tests/batch"))
        self.published.set()
        wanted = set(self.services)
        done: set[str] = set()

        def finished(event) -> bool:
            if event.envelope.type == "verification.passed" and event.data.env == "prod" \
                    and event.data.service in wanted:
                done.add(event.data.service)
            return done == wanted

        try:
            await watcher.wait_for(finished, timeout, f"all {self.size} releases verified in prod")
        except TimeoutError as timeout_error:
            raise AssertionError(f"{timeout_error}; {await self.progress(watcher)}") from None
        return time.monotonic() - t0

    async def progress(self, watcher: EventWatcher) -> str:
        """Where the batch stands (to explain a timeout): releases per furthest environment,
        the consumer groups' lag and each service's /health."""
        furthest: dict[str, int] = {}
        mine = set(self.services)
        for event in watcher.events:
            if event.envelope.type == "verification.passed" and event.data.service in mine:
                furthest[event.data.service] = max(furthest.get(event.data.service, -1), ENVS.index(event.data.env))
        reached = {env: sum(1 for i in furthest.values() if i == n) for n, env in enumerate(ENVS)}
        reached["nowhere"] = self.size - len(furthest)
        lag = await group_lag(self.settings, devstack.SERVICES,
                              [spec.name for spec in topics.ALL_TOPICS if spec.name != topics.DLQ])
        health = {}
        async with httpx.AsyncClient(timeout=2.0) as client:
            for name, port in devstack.SERVICE_HEALTH_PORTS.items():
                try:
                    health[name] = (await client.get(f"http://127.0.0.1:{port}/health")).json()
                except httpx.HTTPError as error:
                    health[name] = f"no answer ({type(error).__name__})"
        return f"furthest environment verified per release: {reached}; consumer lag: {lag}; health: {health}"

    async def wait_until_part_in_dev(self, watcher: EventWatcher, fraction: float, timeout: float = 120) -> None:
        """Await the moment `fraction` of the batch has been verified in dev (to strike mid-run)."""
        wanted, seen = max(1, int(self.size * fraction)), set()

        def far_enough(event) -> bool:
            if event.envelope.type == "verification.passed" and event.data.env == "dev" \
                    and event.data.service in self.services:
                seen.add(event.data.service)
            return len(seen) >= wanted

        await watcher.wait_for(far_enough, timeout, f"{wanted} releases verified in dev")

    async def result(self, seconds: float, watcher: EventWatcher) -> BatchResult:
        """Read the driver's journals and the ledger's projection for this run."""
        index = {service: i for i, service in enumerate(self.services)}
        starts: dict[tuple[int, str], list[str]] = {}
        for service in self.services:
            for env in ENVS:
                journal = self.settings.var_dir / "run" / "apps" / f"{service}--{env}.noop.jsonl"
                lines = journal.read_text().splitlines() if journal.exists() else []
                starts[(index[service], env)] = [json.loads(line)["digest"] for line in lines]
        conn = await asyncpg.connect(database_dsn(self.settings, READER))
        try:
            rows = await conn.fetch("select service, env, version, digest, state from ledger.environments "
                                    "where service = any($1::text[])", self.services)
        finally:
            await conn.close()
        final = {(index[r["service"]], r["env"]): (r["version"], r["digest"], r["state"]) for r in rows}
        events = sum(1 for e in watcher.events if e.data.service in index)
        verified = len({e.data.service for e in watcher.events if e.envelope.type == "verification.passed"
                        and e.data.env == "prod" and e.data.service in index})
        return BatchResult(seconds, events, verified, starts, final)


async def ledger_caught_up(settings: Settings, services: list[str], expected_rows: int, timeout: float) -> None:
    """Wait (bounded) until the ledger's projection holds a verified row for every slot of the batch."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(database_dsn(settings, READER))
    try:
        while await conn.fetchval("select count(*) from ledger.environments where service = any($1::text[]) "
                                  "and state = 'verified'", services) < expected_rows:
            if time.monotonic() > deadline:
                raise TimeoutError("the ledger did not catch up")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
