"""Scale-out: two instances of every service share the work; one dies mid-run; nothing changes in the result."""

import asyncio
import signal

import httpx
import pytest

import devstack
from shared.platform.client import EventWatcher
from tests.e2e.batch import ENVS, Batch, ledger_caught_up
from tests.e2e.test_infrastructure import assert_same_as_a_fault_free_run

pytestmark = pytest.mark.e2e

SIZE = 60


@pytest.fixture
def second_instances(stack):
    """A second instance of every service in the same consumer groups; stopped afterwards."""
    for name in devstack.SERVICES:
        devstack.start_service(name, instance=2)
    devstack.wait_services_ready(90, names=devstack.SERVICES, instance=2)
    yield
    for name in devstack.SERVICES:
        devstack.stop_service(name, instance=2)


async def processed_by_instance(instance: int) -> dict[str, int]:
    """How many events each service's instance has handled (from its /health)."""
    counts = {}
    async with httpx.AsyncClient(timeout=3.0) as client:
        for name in devstack.SERVICES:
            port = devstack.SERVICE_HEALTH_PORTS[name] + 10 * (instance - 1)
            counts[name] = (await client.get(f"http://127.0.0.1:{port}/health")).json()["processed"]
    return counts


async def test_two_instances_share_the_work_and_one_dying_mid_run_changes_nothing(stack, tmp_path, second_instances):
    batch = Batch(stack, tmp_path, SIZE, "scale")
    async with EventWatcher(stack) as watcher:
        run = asyncio.create_task(batch.run_through(watcher, timeout=200))
        await batch.wait_until_part_in_dev(watcher, 0.25)
        shared_work = await processed_by_instance(2)
        for name in devstack.SERVICES:
            await asyncio.to_thread(devstack.stop_service, name, signal.SIGKILL, 20.0, 2)
        seconds = await run
        await ledger_caught_up(stack, batch.services, SIZE * len(ENVS), timeout=120)
        result = await batch.result(seconds, watcher)
        order, seen = {}, set()
        for event in watcher.events:  # a relay killed mid-flush publishes some events twice: count ids once
            if event.envelope.type == "verification.passed" and event.data.service in batch.services \
                    and event.id not in seen:
                seen.add(event.id)
                order.setdefault(event.data.service, []).append(event.data.env)

    assert sum(shared_work.values()) > 0, "the second instances took part before they died"
    assert_same_as_a_fault_free_run(batch, result)
    assert all(envs == list(ENVS) for envs in order.values()) and len(order) == SIZE
