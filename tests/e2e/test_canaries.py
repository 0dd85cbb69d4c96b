"""Durable canaries on the real stack: a canary is a row moved on by the deployer, not a handler call.

The deployer here runs with a 10 s Kafka poll interval (the setting; 120 s by default), and each canary
lasts longer than that: the order's record is committed while the canary is at its first step, every
step is recorded once, and the canary completes. A deployer SIGKILLed in the middle of a step comes back
to that same step: nothing started again, the requests counted before the kill still counted.
"""

import asyncio
import os
import signal
import time

import pytest

import devstack

from shared import topics
from shared.client import group_lag
from tests.e2e.test_strategies import load, release, router_port, served_by, starts, version_through

pytestmark = pytest.mark.e2e

POLL_INTERVAL_S = 10
CANARY = """
service: {service}
environments:
  - name: staging
    strategy:
      canary:
        steps: STEPS
        analysis: {{interval: INTERVAL, min_requests: 10, max_error_rate: 0.05, max_p99_ms: 500, max_wait: 30s}}
    config: {{APP_ENV: staging}}
"""


def canary(steps: str, interval: str) -> str:
    return CANARY.replace("STEPS", steps).replace("INTERVAL", interval)


def restart_deployer(sig: int = signal.SIGTERM) -> None:
    devstack.stop_service("deployer", sig)
    devstack.start_service("deployer")
    devstack.wait_services_ready(names=["deployer"])


@pytest.fixture
def short_poll_interval():
    """The deployer with a 10 s max poll interval for the test, then as before."""
    os.environ["PROMOTE_KAFKA_MAX_POLL_INTERVAL_S"] = str(POLL_INTERVAL_S)
    try:
        restart_deployer()
        yield POLL_INTERVAL_S
    finally:
        del os.environ["PROMOTE_KAFKA_MAX_POLL_INTERVAL_S"]
        restart_deployer()


async def committed_by_deployer(scenario, timeout: float = 5.0) -> bool:
    """Whether the deployer's group has committed every record of promotion.gates (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while (await group_lag(scenario.settings, ["deployer"], [topics.GATES]))["deployer"] != 0:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def canary_row(scenario, version: str) -> dict:
    rows = await scenario.query("deployer", "select c.*, d.version from canaries c join deployments d "
                                "using (deployment_id) where c.service = $1 and d.version = $2",
                                scenario.service, version)
    return dict(rows[0])


def steps_seen(scenario, version: str) -> list[tuple[int, int]]:
    return [(e.data.step, e.data.share) for e in scenario.seen("deployment.progressed", version=version)]


async def test_a_canary_longer_than_the_poll_interval_completes_and_its_order_is_committed_at_once(
        scenario, short_poll_interval):
    await scenario.apply_pipeline(canary("[10, 30, 60, 100]", "4s"))
    await release(scenario, "1.0.0", "staging")
    port = await router_port(scenario, "staging")
    async with load(port) as report:
        path, digest = scenario.build("1.0.1")
        await scenario.send(scenario.build_completed("1.0.1", path, digest))
        first = await scenario.wait("deployment.progressed", env="staging", version="1.0.1", step=1, timeout=60)
        assert await committed_by_deployer(scenario), "the order's handler returned while the canary goes on"
        assert (await canary_row(scenario, "1.0.1"))["state"] == "running"
        passed = await scenario.wait("verification.passed", env="staging", version="1.0.1", timeout=120)
        assert await version_through(port) == "1.0.1"
    took = (passed.envelope.time - first.envelope.time).total_seconds()
    print(f"\ncanary of 3 judged steps took {took:.1f} s (poll interval {short_poll_interval} s); "
          f"{report.result().failed} of {report.result().sent} requests failed")
    assert took > short_poll_interval
    assert steps_seen(scenario, "1.0.1") == [(1, 10), (2, 30), (3, 60)]
    assert all(int(passed.data.checks[f"step_{share}_requests"]) >= 10 for share in (10, 30, 60))
    assert len(scenario.seen("deployment.started", version="1.0.1")) == 1
    assert len(scenario.seen("verification.passed", version="1.0.1")) == 1
    assert await starts(scenario) == 2 and report.result().failed == 0
    assert (await canary_row(scenario, "1.0.1"))["state"] == "done"


async def test_a_deployer_killed_mid_step_resumes_that_step_without_starting_anything_again(scenario):
    await scenario.apply_pipeline(canary("[20, 50, 100]", "6s"))
    await release(scenario, "1.0.0", "staging")
    port = await router_port(scenario, "staging")
    async with load(port) as report:
        path, digest = scenario.build("1.0.1")
        await scenario.send(scenario.build_completed("1.0.1", path, digest))
        await scenario.wait("deployment.progressed", env="staging", version="1.0.1", step=1, timeout=60)
        before = await canary_row(scenario, "1.0.1")
        while not before["published"]:  # the first step reaches the router right after its event
            await asyncio.sleep(0.05)
            before = await canary_row(scenario, "1.0.1")
        lane_port = (await scenario.query("deployer", "select port from lanes where service = $1 and lane = $2",
                                          scenario.service, before["lane"]))[0]["port"]
        deadline = time.monotonic() + 5
        while served_by(scenario, "staging", lane_port) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        counted_before_kill = served_by(scenario, "staging", lane_port)
        await asyncio.to_thread(restart_deployer, signal.SIGKILL)
        after = await canary_row(scenario, "1.0.1")
        assert (after["step"], after["step_started_at"], after["pid"]) == \
            (before["step"], before["step_started_at"], before["pid"]), "the same step goes on"
        passed = await scenario.wait("verification.passed", env="staging", version="1.0.1", timeout=120)
    print(f"\nkilled at step 1 with {counted_before_kill} canary requests counted; step 1 judged on "
          f"{passed.data.checks['step_20_requests']}")
    assert counted_before_kill >= 5
    assert int(passed.data.checks["step_20_requests"]) >= counted_before_kill, "nothing counted was lost"
    assert steps_seen(scenario, "1.0.1") == [(1, 20), (2, 50)]
    assert await starts(scenario) == 2, "nothing was started twice"
    assert len(scenario.seen("deployment.started", version="1.0.1")) == 1
    assert len(scenario.seen("verification.passed", version="1.0.1")) == 1
    assert report.result().failed == 0
