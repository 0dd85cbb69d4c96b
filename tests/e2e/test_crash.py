"""Exactly-once effects under SIGKILL: the same batch with and without services dying at random moments."""

import asyncio
import json
import os
import re

import httpx
import pytest

import devstack

from shared.platform.client import EventWatcher
from tests.e2e.batch import ENVS, Batch, ledger_caught_up
from tests.e2e.chaos import Chaos

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SIZE = int(os.environ.get("PROMOTE_CRASH_BATCH", "200"))


async def run_batch(stack, tmp_path, label: str, chaos: Chaos | None = None):
    """Run one batch (with chaos running alongside, if given) and collect its result."""
    batch = Batch(stack, tmp_path, SIZE, label)
    async with EventWatcher(stack) as watcher:
        monkey = asyncio.create_task(chaos.run()) if chaos else None
        try:
            seconds = await batch.run_through(watcher, timeout=600)
        finally:
            if chaos:
                chaos.stop()
                await monkey
        await ledger_caught_up(stack, batch.services, SIZE * len(ENVS), timeout=120)
        return await batch.result(seconds, watcher)


async def batches_of_several(consumer: str) -> float:
    """How many batches of more than one record the consumer has handled since it started (/metrics);
    0 before its first batch (the series appears with it)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{devstack.SERVICE_HEALTH_PORTS[consumer]}") as client:
        metrics = (await client.get("/metrics")).text
    label = f'consumer="{consumer}"'
    count = re.search(rf'^promote_batch_records_count\{{{label}\}} (\S+)$', metrics, re.M)
    single = re.search(rf'^promote_batch_records_bucket\{{{label},le="1.0"\}} (\S+)$', metrics, re.M)
    if count is None or single is None:
        return 0.0
    return float(count.group(1)) - float(single.group(1))


async def test_a_batch_survives_services_killed_at_random_moments_with_nothing_lost_or_done_twice(stack, tmp_path):
    before = {consumer: await batches_of_several(consumer) for consumer in ("gates", "ledger")}
    calm = await run_batch(stack, tmp_path, "calm")
    # 200 builds at once queue up: the services take what waits in batches (one transaction each).
    assert all([await batches_of_several(consumer) > before[consumer] for consumer in before]), before
    # Dense enough that the stormy run, now ~10 s long, sees several kills of each kind of service.
    chaos = Chaos(seed=int.from_bytes(os.urandom(4), "big"), pause=(0.1, 0.6), downtime=(0.05, 0.5))
    stormy = await run_batch(stack, tmp_path, "crash", chaos)

    report = {"promotions": SIZE, "environments": len(ENVS), "kills": chaos.kills, "restarts": chaos.restarts,
              "seed": chaos.seed, "calm_seconds": round(calm.seconds, 1), "crash_seconds": round(stormy.seconds, 1),
              "calm_events": calm.events, "crash_events": stormy.events,
              "lost": SIZE - stormy.verified_in_prod, "duplicated": len(stormy.duplicates())}
    (stack.var_dir / "reports").mkdir(parents=True, exist_ok=True)
    (stack.var_dir / "reports" / "crash.json").write_text(json.dumps(report, indent=2))
    print(f"\ncrash test: {json.dumps(report)}")

    assert calm.verified_in_prod == SIZE and stormy.verified_in_prod == SIZE, report
    one_start_each = {slot: digests[:1] for slot, digests in calm.starts.items()}
    assert calm.starts == one_start_each and len(one_start_each) == SIZE * len(ENVS)
    assert stormy.starts == calm.starts, stormy.duplicates()
    assert stormy.final_state == calm.final_state
    assert chaos.kills >= 5, report
