"""Infrastructure faults: the broker or the database restarts mid-run; services reconnect by themselves."""

import asyncio
import time

import httpx
import pytest

import devstack
from devstack import kafka, postgres
from shared.platform.client import EventWatcher
from tests.e2e.batch import ENVS, Batch, ledger_caught_up

pytestmark = pytest.mark.e2e

SIZE = 60
OUTAGE_S = 8.0


async def sample_health(samples: list[dict], stop: asyncio.Event) -> None:
    """Read every service's /health twice a second (what an operator's monitoring would see)."""
    async with httpx.AsyncClient(timeout=3.0) as client:
        while not stop.is_set():
            for name, port in devstack.SERVICE_HEALTH_PORTS.items():
                try:
                    body = (await client.get(f"http://127.0.0.1:{port}/health")).json()
                except httpx.HTTPError:
                    body = {"status": "no answer"}
                samples.append({"service": name, "at": time.monotonic(), **body})
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass


async def run_with_outage(stack, tmp_path, label: str, stop_it, start_it) -> tuple[Batch, object, list[dict]]:
    """Run a batch; once a quarter of it is verified in dev, stop the component for OUTAGE_S and start it again."""
    batch = Batch(stack, tmp_path, SIZE, label)
    samples: list[dict] = []
    done = asyncio.Event()
    async with EventWatcher(stack) as watcher:
        monitor = asyncio.create_task(sample_health(samples, done))
        run = asyncio.create_task(batch.run_through(watcher, timeout=200))
        await batch.wait_until_part_in_dev(watcher, 0.25)
        await batch.published.wait()  # on a slow machine the last builds may still be on their way
        await asyncio.to_thread(stop_it)
        await asyncio.sleep(OUTAGE_S)  # the outage itself: its length is the point, nothing to await
        await asyncio.to_thread(start_it)
        seconds = await run
        await ledger_caught_up(stack, batch.services, SIZE * len(ENVS), timeout=120)
        result = await batch.result(seconds, watcher)
        done.set()
        await monitor
    return batch, result, samples


def assert_same_as_a_fault_free_run(batch: Batch, result) -> None:
    """Each release verified in prod, started exactly once per environment, and the ledger says so."""
    digests = [digest for _, digest in batch.artifacts()]
    assert result.verified_in_prod == SIZE
    assert result.starts == {(i, env): [digests[i]] for i in range(SIZE) for env in ENVS}
    assert result.final_state == {(i, env): ("1.0.0", digests[i], "verified") for i in range(SIZE) for env in ENVS}


def restart_kafka_start() -> None:
    t0 = time.monotonic()
    kafka.wait_ready(kafka.start(), t0)


async def test_a_batch_completes_the_same_across_a_kafka_broker_restart(stack, tmp_path):
    batch, result, samples = await run_with_outage(stack, tmp_path, "kafka", kafka.stop, restart_kafka_start)
    assert_same_as_a_fault_free_run(batch, result)
    saw = {s["service"] for s in samples if s.get("kafka") == "unreachable" and s["status"] == "degraded"}
    assert saw == set(devstack.SERVICES), "every service shows the broker outage on /health"
    assert all(s["status"] == "ok" for s in samples[-len(devstack.SERVICES):]), "and recovers"


async def test_a_batch_completes_the_same_across_a_postgres_restart(stack, tmp_path):
    batch, result, samples = await run_with_outage(stack, tmp_path, "postgres", postgres.stop, postgres.up)
    assert_same_as_a_fault_free_run(batch, result)
    saw = {s["service"] for s in samples if s.get("database") == "unreachable" and s["status"] == "degraded"}
    assert saw == set(devstack.SERVICES), "every service shows the database outage on /health"
    assert all(s["status"] == "ok" for s in samples[-len(devstack.SERVICES):]), "and recovers"
