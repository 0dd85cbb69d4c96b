"""Serving latency: build.completed -> the release verified serving /version, images and containers next to
artifact files and local processes, in the same run; and the start time of one container against one process.

  serving   build.completed -> verification.passed in dev (the deployer got /health and /version answered
            and checked the digest): intake's fetch (a registry resolve, or a file copy into the store),
            gates, the deployer's pull (each build is a new image: a new layer) or store check, the start,
            the verification. One build at a time (no queueing), each with its own bytes.
  start     the driver's start -> GET /version answers 200 on the published port, then stop: a container
            from an image already pulled, against a process of the example's artifact file (the baseline).

Part of bench.latency (--serving N --starts M); the figures are in docs/benchmarks.md.
"""

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from bench import common
from bench.common import console
from services.deployer.container import ContainerDriver
from services.deployer.domain import Target
from services.deployer.driver import LocalDriver
from shared.platform.client import Publisher
from shared.platform.credentials import READER, database_dsn, registry_login
from shared.contracts.events import Artifact, BuildCompleted, new_event
from shared.contracts.pipeline import PipelineDefinition, parse_pipeline
from shared.platform.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "examples" / "payments"))
from build import build as build_artifact  # noqa: E402  (the example's own builds)
from build_image import build_image, push  # noqa: E402

KINDS = {"image": ("oci", "container"), "file": ("file", "local")}


def pipeline(service: str, kind: str) -> PipelineDefinition:
    artifact, driver = KINDS[kind]
    return parse_pipeline(f"service: {service}\nartifact: {{kind: {artifact}}}\nenvironments:\n"
                          f"  - {{name: dev, driver: {driver}, config: {{APP_ENV: dev}}}}\n")


async def artifacts(kind: str, services: list[str], folder: Path) -> list[Artifact]:
    """One build per service with bytes of its own (a label baked in): pushed images, or files to drop."""
    made = []
    for index, service in enumerate(services):
        label = f"bench{index}"
        if kind == "image":
            image = await asyncio.to_thread(build_image, "1.0.0", label=label)
            reference = f"{common.SETTINGS.registry}/{service}:1.0.0"
            made.append(Artifact(kind="oci", uri=reference, digest=await push(image, reference, common.SETTINGS)))
        else:
            path = folder / f"{service}.pyz"
            digest = await asyncio.to_thread(build_artifact, "1.0.0", path, label=label)
            made.append(Artifact(kind="file", uri=path.as_uri(), digest=digest))
    return made


async def measure_serving(kind: str, count: int, timeout: float) -> dict:
    """build.completed -> verification.passed in dev, one build at a time; ms per build."""
    rid = common.run_id(f"srv-{kind}")
    services = [f"bs-{rid}-{i:03d}" for i in range(count)]
    folder = common.drop_folder(f"bench-{rid}-")
    with console.status(f"{kind}: building {count} artifacts"):
        built = await artifacts(kind, services, folder)
    mine = rid.encode()
    hops: list[dict[str, float]] = []
    async with Publisher(common.SETTINGS) as publisher, \
            common.Observer(common.LIVE_TOPICS, keep=lambda r: r if mine in r.value else None) as observer:
        for service in services:
            await publisher.publish(new_event(_applied(pipeline(service, kind)), source="/bench"))
        await common.wait_pipelines(services)
        for service, artifact in zip(services, built):
            await publisher.publish(new_event(BuildCompleted(service=service, version="1.0.0", commit="bench",
                                                             author="ci", checks={}, artifact=artifact),
                                              source="/bench"))
            hops.append(await _hop(observer, service, timeout))
    parts = {"intake": [h["artifact.registered"] for h in hops],
             "gates": [h["gate.passed"] - h["artifact.registered"] for h in hops],
             "deployer": [h["verification.passed"] - h["gate.passed"] for h in hops]}
    return {"kind": kind, "driver": KINDS[kind][1], "serving_ms": common.percentiles(
                [h["verification.passed"] for h in hops]),
            "parts_ms": {name: common.percentiles(values) for name, values in parts.items()}, "services": services}


def _applied(definition: PipelineDefinition):
    from cli.ops import pipeline_applied

    return pipeline_applied(definition, "bench")


STAGES = ("build.completed", "artifact.registered", "gate.passed", "verification.passed")
"""The serving hop in parts: intake (build -> registered), gates (registered -> gate.passed in dev: gates
hears of the artifact and the promotion), deployer (gate.passed -> verification.passed: pull, start, verify)."""


async def _hop(observer: common.Observer, service: str, timeout: float) -> dict[str, float]:
    """ms from this service's build.completed to each later stage in dev, as the observer saw them."""
    deadline, seen, parsed = time.monotonic() + timeout, {}, 0
    while time.monotonic() < deadline:
        for at, record in observer.seen[parsed:]:
            body = json.loads(record.value)
            if body["data"]["service"] != service:
                continue
            if body["type"] in STAGES:
                seen.setdefault(body["type"], at)
            elif body["type"] in ("verification.failed", "deployment.failed", "artifact.rejected"):
                raise RuntimeError(f"{service}: {body['type']}: {body['data'].get('reason')}")
        parsed = len(observer.seen)
        if len(seen) == len(STAGES):
            return {stage: (seen[stage] - seen[STAGES[0]]) * 1000 for stage in STAGES[1:]}
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{service}: no verification.passed within {timeout:.0f} s")


async def measure_starts(count: int, image_service: str, file_service: str) -> dict:
    """Start -> /version answers, `count` times each: a container (image pulled already) and a process."""
    settings = common.SETTINGS
    container = ContainerDriver(settings.container_engine, registries=settings.image_registries,
                                login=registry_login(settings, "deployer"))
    run_dir, log_dir = settings.var_dir / "run" / "bench", settings.var_dir / "log" / "bench"
    for folder in (run_dir, log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    local = LocalDriver(settings.store_dir, run_dir, log_dir, app_user=settings.app_user)
    figures = {}
    for kind, driver, service in (("container", container, image_service), ("process", local, file_service)):
        running = await _deployed(service)
        target = Target(str(uuid.uuid4()), service, "bench", "1.0.0", running["digest"], {}, "sha256:" + "0" * 64,
                        driver="container" if kind == "container" else "local", location=running["location"])
        await asyncio.to_thread(driver.preflight, target, "bench")
        times = []
        for _ in range(count):
            port = _free_port()
            t0 = time.perf_counter()
            pid = await asyncio.to_thread(driver.start, target, "bench", {"PORT": str(port), "BUILD_VERSION": "1.0.0"})
            await _answers(port)
            times.append((time.perf_counter() - t0) * 1000)
            await asyncio.to_thread(driver.stop, service, "bench", pid)
        figures[kind] = common.percentiles(times)
    return figures


async def _deployed(service: str) -> dict:
    """The digest and location the deployer ran for `service` in dev (from its slot)."""
    conn = await asyncpg.connect(database_dsn(common.SETTINGS, READER))
    try:
        row = await conn.fetchrow("select digest, location from deployer.slots where service = $1 and env = 'dev'",
                                  service)
        return dict(row)
    finally:
        await conn.close()


async def _answers(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/version")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered on :{port} within {timeout:.0f} s")
            await asyncio.sleep(0.002)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def run(serving: int, starts: int, timeout: float) -> dict:
    """Both kinds' serving latency, then the start times (on the first service of each kind)."""
    result = {kind: await measure_serving(kind, serving, timeout) for kind in ("image", "file")}
    if starts:
        result["starts"] = await measure_starts(starts, result["image"]["services"][0],
                                                result["file"]["services"][0])
    for kind in ("image", "file"):
        del result[kind]["services"]
    return result


def show(result: dict) -> None:
    from rich.table import Table

    table = Table(title="serving: build.completed -> verified serving /version in dev, ms (one build at a time)")
    for column in ("artifact", "driver", "part", "n", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column in ("artifact", "driver", "part") else "right")
    for kind in ("image", "file"):
        figures = result[kind]["serving_ms"]
        table.add_row(kind, result[kind]["driver"], "all", *(str(figures[k]) for k in ("n", "p50", "p95", "p99", "max")))
        for part, figures in result[kind]["parts_ms"].items():
            table.add_row("", "", part, *(str(figures[k]) for k in ("n", "p50", "p95", "p99", "max")))
    console.print(table)
    if "starts" in result:
        starts = Table(title="start -> GET /version answers, ms")
        for column in ("what", "n", "p50", "p95", "p99", "max"):
            starts.add_column(column, justify="left" if column == "what" else "right")
        for kind, label in (("container", "a container (image pulled)"), ("process", "a process (baseline)")):
            figures = result["starts"][kind]
            starts.add_row(label, *(str(figures[k]) for k in ("n", "p50", "p95", "p99", "max")))
        console.print(starts)
