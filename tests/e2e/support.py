"""What end-to-end tests share: a fresh service name per test, artifacts, a pipeline, and the bus."""

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

import devstack
from shared.contracts import topics
from shared.platform.client import EventWatcher, Publisher, matches
from shared.platform.credentials import READER, SUPERUSER, database_dsn, kafka_options
from shared.platform.db import connect, migrate
from shared.contracts.events import Artifact, BuildCompleted, Event, EventData, new_event
from shared.contracts.pipeline import PipelineDefinition, parse_pipeline
from shared.platform.settings import Settings

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "payments"))
from build import build as build_artifact  # noqa: E402  (the example's own build script)

PIPELINE = """
service: {service}
environments:
  - name: dev
    config: {{APP_ENV: dev, FEATURE_NEW_UI: "true"}}
  - name: test
    gates: [{{evidence: unit-tests}}]
  - name: staging
    gates: [{{evidence: integration-tests}}]
  - name: prod
    gates: [{{approval: {{min: 1, not_author: true}}}}]
    config: {{APP_ENV: prod, FEATURE_NEW_UI: "false"}}
"""
ENVS = ("dev", "test", "staging", "prod")


@dataclass
class Scenario:
    """One test's world: its own service name, its artifacts, a publisher and a watcher."""

    settings: Settings
    publisher: Publisher
    watcher: EventWatcher
    dist: Path
    service: str = field(default_factory=lambda: f"svc-{uuid.uuid4().hex[:10]}")

    async def apply_pipeline(self, text: str = PIPELINE) -> PipelineDefinition:
        """Publish the pipeline for this test's service and wait until gates and intake have it."""
        from cli.ops import pipeline_applied

        definition = parse_pipeline(text.format(service=self.service))
        await self.send(pipeline_applied(definition, "test"))
        return definition

    def build(self, version: str, *, bad: bool = False, label: str = "", faulty: bool = False) -> tuple[Path, str]:
        """Build the example app as this service's artifact; returns (path, digest)."""
        path = self.dist / f"{self.service}-{version}{'-' + label if label else ''}.pyz"
        return path, build_artifact(version, path, bad=bad, label=label, faulty=faulty)

    def build_completed(self, version: str, path: Path, digest: str, author: str = "alice",
                        checks: dict | None = None) -> BuildCompleted:
        """CI's build.completed for an artifact file."""
        return BuildCompleted(service=self.service, version=version,
                              artifact=Artifact(kind="file", uri=path.as_uri(), digest=digest), commit="c0ffee",
                              author=author, checks=checks if checks is not None else {"unit-tests": "passed"})

    async def send(self, data: EventData, as_principal: str | None = None) -> Event:
        """Publish an event as CI or an operator would (or as `as_principal`, e.g. a compromised service)."""
        event = new_event(data, source="/tests")
        await self.publisher.publish(event, as_principal=as_principal)
        return event

    async def wait(self, event_type: str, timeout: float = 30.0, **fields) -> Event:
        """Await this service's next `event_type` event with these data fields."""
        return await self.watcher.wait_for(matches(event_type, service=self.service, **fields), timeout,
                                           what=f"{event_type} {fields}")

    def seen(self, event_type: str, **fields) -> list[Event]:
        """This service's events of a type seen so far."""
        return self.watcher.seen(matches(event_type, service=self.service, **fields))

    async def promote_to_staging(self, version: str, author: str = "alice") -> str:
        """Publish a good build and carry it to staging (with the integration-test evidence); returns its digest."""
        from shared.contracts.events import EvidenceRecorded

        path, digest = self.build(version)
        await self.send(self.build_completed(version, path, digest, author=author))
        await self.wait("verification.passed", env="test", version=version)
        await self.send(EvidenceRecorded(service=self.service, version=version, digest=digest, env="test",
                                         check="integration-tests", result="passed"))
        await self.wait("verification.passed", env="staging", version=version)
        return digest

    async def processed_by(self, consumer: str, event: Event, timeout: float = 30.0) -> None:
        """Wait until `consumer` has committed its handling of `event` (its inbox row exists).

        For the few facts a service records without emitting anything, this durable row is
        the only thing to wait for; it is polled with a bound, never slept on blindly.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while not await self.query(consumer, "select 1 from processed_events where event_id = $1", event.id):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{consumer} did not process {event.envelope.type} within {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def query(self, schema: str, sql: str, *args):
        """Read one service's table (tests may look; services never read each other's)."""
        conn = await asyncpg.connect(database_dsn(self.settings, READER), server_settings={"search_path": schema})
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def scratch_schema(settings: Settings, service: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection on a fresh schema with `service`'s own migrations (the contract suites' PostgreSQL side),
    dropped afterwards."""
    schema = f"{service}_contract_{uuid.uuid4().hex[:8]}"
    pool = await connect(database_dsn(settings, SUPERUSER), schema)
    try:
        await migrate(pool, schema, f"services.{service}")
        async with pool.acquire() as conn:
            yield conn
            await conn.execute(f"drop schema {schema} cascade")
    finally:
        await pool.close()


async def dlq_end(settings: Settings) -> int:
    """The dead-letter topic's end offset now (read dead letters from here on)."""
    consumer = AIOKafkaConsumer(**kafka_options(settings, "api"))
    await consumer.start()
    try:
        partition = TopicPartition(topics.DLQ, 0)
        return (await consumer.end_offsets([partition]))[partition]
    finally:
        await consumer.stop()


async def dead_letters(settings: Settings, start: int, enough: Callable[[list], bool],
                       timeout: float = 30.0) -> list[tuple[object, dict[str, str]]]:
    """(record, headers) of `promotion.dlq` from offset `start`, read until `enough(letters)` or the timeout."""
    consumer = AIOKafkaConsumer(**kafka_options(settings, "api"), enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topics.DLQ, 0)
        consumer.assign([partition])
        consumer.seek(partition, start)
        letters: list = []
        deadline = time.monotonic() + timeout
        while not enough(letters) and time.monotonic() < deadline:
            for record in (await consumer.getmany(partition, timeout_ms=500)).get(partition, []):
                letters.append((record, {name: value.decode() for name, value in record.headers}))
        return letters
    finally:
        await consumer.stop()


def admin_token() -> str:
    """The stack's first admin API token (the API wrote it at its first start)."""
    return devstack.admin_token_file().read_text().strip()


def api_token(subject: str, *roles: str, groups: tuple[str, ...] = ()) -> str:
    """A fresh API token for `subject` with these role bindings, created by the stack's admin."""
    from cli import api

    return api.call("POST", "/v1/tokens", json={"subject": subject, "roles": list(roles), "groups": list(groups)},
                    bearer=admin_token())["token"]


def promote(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess, as an operator would (wide terminal, so lines do not wrap), with the stack's
    admin token unless `env` gives PROMOTE_TOKEN (an empty one: no token at all)."""
    chosen = {"PROMOTE_TOKEN": admin_token(), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "COLUMNS": "200", "PROMOTE_TOKEN_FILE": "/nonexistent", **chosen},
                          timeout=timeout)


async def promote_async(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`promote` without blocking the test's event loop (so the watcher keeps up)."""
    return await asyncio.to_thread(promote, *args, env=env, timeout=timeout)
