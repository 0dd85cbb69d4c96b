"""What the benchmarks share: the stack, an all-topics observer, the raw-Kafka echo, figures, RSS, JSON.

Every figure a benchmark prints is measured in the same run as its raw-Kafka baseline, on the
same broker; nothing here tunes the services.
"""

import asyncio
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console

import devstack
from cli.ops import pipeline_applied
from shared.platform.credentials import READER, database_dsn, kafka_options
from shared.platform import client
from shared.contracts import topics
from shared.contracts.events import Artifact, BuildCompleted, Event, new_event
from shared.contracts.pipeline import PipelineDefinition, parse_pipeline
from shared.platform.settings import Settings

console = Console(highlight=False, width=max(140, shutil.get_terminal_size((140, 40)).columns))
SETTINGS = Settings()
BOOTSTRAP = SETTINGS.kafka_bootstrap
LIVE_TOPICS = [spec.name for spec in topics.ALL_TOPICS if spec.name != topics.DLQ]
ENVS = ("dev", "test", "staging", "prod")
PIPELINE_ENV = "  - {{name: {env}, driver: noop, config: {{APP_ENV: {env}}}}}\n"


def up() -> dict[str, int]:
    """Start (or join) the local stack with its services; {service: pid} of the first instances."""
    devstack.up(services=True)
    return {name: devstack.services.service_pid(name) for name in devstack.SERVICES}


def run_id(label: str) -> str:
    """A short unique name for this run; every service name and temporary topic carries it."""
    return f"{label}-{uuid.uuid4().hex[:6]}"


def percentiles(values: list[float]) -> dict[str, float]:
    """n, p50, p95, p99 and max (nearest rank), rounded to 0.01."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 2)

    return {"n": len(ordered), "p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": round(ordered[-1], 2)}


def write_json(path: str | None, result: dict) -> None:
    """Write the result as JSON when `--json PATH` was given."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")
        console.print(f"wrote {path}")


def machine() -> dict:
    """Where the figures were taken: CPU model, cores, memory."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "python": sys.version.split()[0]}


# --- the pipeline and the builds of a run ---------------------------------------------------------

def pipeline_events(services: list[str], envs: tuple[str, ...]) -> list[Event]:
    """A pipeline.applied per service whose environments pass on their own (noop driver, no gates)."""
    text = "service: template\nenvironments:\n" + "".join(PIPELINE_ENV.format(env=env) for env in envs)
    template = parse_pipeline(text).model_dump(mode="json")  # YAML once: parsing it costs 2 ms
    return [new_event(pipeline_applied(PipelineDefinition.model_validate({**template, "service": s}), "bench"),
                      source="/bench") for s in services]


def drop_folder(prefix: str) -> Path:
    """A fresh folder for a run's artifacts in the drop directory (intake reads files only under its roots)."""
    SETTINGS.drop_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SETTINGS.drop_dir))


def build_event(service: str, version: str, folder: Path) -> Event:
    """build.completed for a small file artifact of its own bytes (so each build has its own digest)."""
    path = folder / f"{service}-{version}"
    path.write_bytes(f"bench artifact {service} {version}\n".encode() * 4)
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    build = BuildCompleted(service=service, version=version, commit="bench", author="ci", checks={},
                           artifact=Artifact(kind="file", uri=path.as_uri(), digest=digest))
    return new_event(build, source="/bench")


async def wait_pipelines(services: list[str], timeout: float = 600.0) -> float:
    """Wait until intake and gates both hold every pipeline (builds then promote at once); seconds waited."""
    t0 = time.monotonic()
    conn = await asyncpg.connect(database_dsn(SETTINGS, READER))
    try:
        while True:
            counts = [await conn.fetchval(f"select count(*) from {schema}.pipelines where service = any($1::text[])",
                                          services) for schema in ("intake", "gates")]
            if min(counts) >= len(services):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"pipelines not stored after {timeout:.0f} s (intake, gates: {counts})")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def group_lag(groups: tuple[str, ...] = devstack.SERVICES) -> dict[str, int]:
    """Records not yet consumed, per service consumer group, over the live topics."""
    return await client.group_lag(SETTINGS, groups, LIVE_TOPICS)


async def wait_quiet(timeout: float, what: str) -> float:
    """Wait until no service group has lag (the stack is quiet); seconds waited. Raises on timeout."""
    t0 = time.monotonic()
    with console.status(f"{what}: waiting for the services to drain") as status:
        while sum((lag := await group_lag()).values()) > 0:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{what}: services still behind after {timeout:.0f} s: {lag}")
            status.update(f"{what}: waiting for the services to drain, lag {lag}")
            await asyncio.sleep(2)
    return round(time.monotonic() - t0, 1)


# --- observing every topic ------------------------------------------------------------------------

class Observer:
    """One plain consumer (no group) on given topics from their current end; keeps (arrival, keep(record)).

    `keep` returns what to remember of a record (None: nothing); by default the record itself.
    """

    def __init__(self, topic_names: list[str], keep=lambda record: record) -> None:
        self.topic_names, self.keep = topic_names, keep
        self.seen: list[tuple[float, object]] = []
        # As the admin: the baselines read temporary topics of their own, which no principal of the trust table may read.
        self._consumer = AIOKafkaConsumer(**kafka_options(SETTINGS, topics.ADMIN), enable_auto_commit=False,
                                          fetch_max_wait_ms=100)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "Observer":
        await self._consumer.start()
        for _ in range(50):  # a topic created a moment ago may not be in the metadata yet
            cluster = await self._consumer._client.fetch_all_metadata()
            if all(cluster.partitions_for_topic(t) for t in self.topic_names):
                break
            await asyncio.sleep(0.2)
        tps = [TopicPartition(t, p) for t in self.topic_names for p in sorted(cluster.partitions_for_topic(t) or ())]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve positions now: what comes later is "after start"
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batches.values():
                self.seen.extend((now, kept) for r in records if (kept := self.keep(r)) is not None)

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


# --- memory ---------------------------------------------------------------------------------------

def proc_status_kib(pid: int, field: str) -> int | None:
    """A kB figure from /proc/<pid>/status (VmRSS, VmHWM), or None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples VmRSS of named pids twice a second in a thread; reports the max seen and VmHWM at the end."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.max_rss = dict.fromkeys(self.pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, pid in self.pids.items():
                self.max_rss[name] = max(self.max_rss[name], proc_status_kib(pid, "VmRSS") or 0)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict[str, dict[str, float]]:
        """{name: {max_rss_mib (during the run), vmhwm_mib (peak since the process started)}}."""
        return {name: {"max_rss_mib": round(self.max_rss[name] / 1024, 1),
                       "vmhwm_mib": round((proc_status_kib(pid, "VmHWM") or 0) / 1024, 1)}
                for name, pid in self.pids.items()}


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, rounded, or None when either is missing."""
    return round(value / baseline, 2) if value and baseline else None
