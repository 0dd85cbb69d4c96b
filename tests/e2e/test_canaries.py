"""Durable canaries on the real stack: a canary is a row moved on by the deployer, not a handler call.

The deployer here runs with a 10 s Kafka poll interval (the setting; 120 s by default), and each canary
lasts longer than that: the order's record is committed while the canary is at its first step, every
step is recorded once, and the canary completes. A deployer SIGKILLed in the middle of a step comes back
to that same step: nothing started again, the requests counted before the kill still counted.
"""

import asyncio
import json
import os
import signal
import time

import pytest

import devstack

from shared.contracts import topics
from shared.platform.client import group_lag
from tests.e2e.support import api_token, promote_async
from tests.e2e.test_strategies import lanes, load, release, router_port, served_by, starts, version_through

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


async def published_canary(scenario, version: str, timeout: float = 10.0) -> dict:
    """The canary's row once its step reached the router (right after its deployment.progressed; bounded)."""
    deadline = time.monotonic() + timeout
    row = await canary_row(scenario, version)
    while not row["published"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the canary of {version} was not published within {timeout:.0f} s")
        await asyncio.sleep(0.05)
        row = await canary_row(scenario, version)
    return row


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
        before = await published_canary(scenario, "1.0.1")
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


async def ledger_commands(scenario) -> list[tuple[str, str]]:
    rows = await scenario.query("ledger", "select canonical from entries where service = $1 and "
                                "type = 'canary.commanded' order by seq", scenario.service)
    return [(data["action"], data["requested_by"]) for data in
            (json.loads(bytes(row["canonical"]))["data"] for row in rows)]


async def test_an_operator_pauses_resumes_and_promotes_a_canary_now_each_audited_and_role_checked(scenario):
    await scenario.apply_pipeline(canary("[10, 50, 100]", "3s"))
    await release(scenario, "1.0.0", "staging")
    port = await router_port(scenario, "staging")
    pat, vic = (await asyncio.to_thread(api_token, "pat", "promoter:staging"),
                await asyncio.to_thread(api_token, "vic", "viewer:staging"))
    ada = await asyncio.to_thread(api_token, "ada", "approver:staging")
    as_ = {name: {"PROMOTE_TOKEN": token} for name, token in (("pat", pat), ("vic", vic), ("ada", ada))}
    async with load(port) as report:
        path, digest = scenario.build("1.0.1")
        await scenario.send(scenario.build_completed("1.0.1", path, digest))
        await scenario.wait("deployment.progressed", env="staging", version="1.0.1", step=1, timeout=60)

        refused = await promote_async("canary", "pause", scenario.service, "--env", "staging", env=as_["vic"])
        assert refused.returncode != 0 and "needs the promoter role in staging" in refused.stderr
        paused = await promote_async("canary", "pause", scenario.service, "--env", "staging", "--reason", "look",
                                     env=as_["pat"])
        assert paused.returncode == 0, paused.stderr
        assert "paused (by pat)" in paused.stdout
        deadline = time.monotonic() + 10
        while (shown := json.loads((await promote_async("status", scenario.service, "--json")).stdout)[
                "environments"]["staging"]["state"]) != "canary paused at 10%" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert shown == "canary paused at 10%"
        again = await promote_async("canary", "pause", scenario.service, "--env", "staging", env=as_["pat"])
        assert again.returncode != 0 and "is paused already" in again.stderr
        with pytest.raises(TimeoutError):  # a paused canary is not judged: no step 2 within twice its interval
            await scenario.wait("deployment.progressed", env="staging", version="1.0.1", step=2, timeout=6)

        resumed = await promote_async("canary", "resume", scenario.service, "--env", "staging", env=as_["pat"])
        assert resumed.returncode == 0, resumed.stderr
        await scenario.wait("deployment.progressed", env="staging", version="1.0.1", step=2, timeout=30)
        not_approver = await promote_async("canary", "promote-now", scenario.service, "--env", "staging",
                                           env=as_["pat"])
        assert not_approver.returncode != 0 and "needs the approver role in staging" in not_approver.stderr
        now = await promote_async("canary", "promote-now", scenario.service, "--env", "staging", "--json",
                                  env=as_["ada"])
        assert now.returncode == 0, now.stderr
        passed = await scenario.wait("verification.passed", env="staging", version="1.0.1", timeout=30)
        assert await version_through(port) == "1.0.1"
    assert json.loads(now.stdout)["outcome"]["result"] == "verification.passed"
    assert (passed.data.checks["promoted_by"], passed.data.checks["promoted_at_share"]) == ("ada", "50%")
    assert "step_50_requests" not in passed.data.checks, "promoted before its 50 % step was judged"
    states = [(e.data.state, e.data.step, e.data.by) for e in scenario.seen("deployment.progressed",
                                                                              version="1.0.1")]
    assert states == [("step", 1, None), ("paused", 1, "pat"), ("resumed", 1, "pat"), ("step", 2, None)]
    assert await ledger_commands(scenario) == [("pause", "pat"), ("resume", "pat"), ("promote", "ada")]
    assert await starts(scenario) == 2 and report.result().failed == 0


async def test_an_aborted_canary_returns_all_traffic_and_a_command_without_a_canary_is_refused(scenario):
    await scenario.apply_pipeline(canary("[10, 50, 100]", "20s"))
    await release(scenario, "1.0.0", "staging")
    port = await router_port(scenario, "staging")
    pat = await asyncio.to_thread(api_token, "pat", "promoter:staging")
    async with load(port) as report:
        path, digest = scenario.build("1.0.1")
        await scenario.send(scenario.build_completed("1.0.1", path, digest))
        await scenario.wait("deployment.progressed", env="staging", version="1.0.1", step=1, timeout=60)
        aborted = await promote_async("canary", "abort", scenario.service, "--env", "staging", "--reason",
                                      "wrong build", env={"PROMOTE_TOKEN": pat})
        assert aborted.returncode == 0, aborted.stderr
        failed = await scenario.wait("verification.failed", env="staging", version="1.0.1", timeout=30)
        await scenario.wait("rollback.completed", env="staging", timeout=60)
        assert await version_through(port) == "1.0.0"
    assert failed.data.reason == "aborted by pat at 10% of traffic (wrong build)"
    assert failed.data.checks["aborted_by"] == "pat"
    nothing = await promote_async("canary", "resume", scenario.service, "--env", "staging",
                                  env={"PROMOTE_TOKEN": pat})
    assert nothing.returncode != 0 and "no canary is in progress in staging" in nothing.stderr
    lane = next(row for row in (await lanes(scenario, "staging")).values() if row["version"] == "1.0.1")
    assert lane["pid"] is None and lane["state"] == "failed"
    assert report.result().failed == 0


async def test_a_newer_release_supersedes_a_canary_in_progress(scenario):
    await scenario.apply_pipeline(canary("[10, 50, 100]", "20s"))
    await release(scenario, "1.0.0", "staging")
    path, digest = scenario.build("1.0.1")
    await scenario.send(scenario.build_completed("1.0.1", path, digest))
    await scenario.wait("deployment.progressed", env="staging", version="1.0.1", step=1, timeout=60)
    path, digest = scenario.build("1.0.2")
    await scenario.send(scenario.build_completed("1.0.2", path, digest))
    failed = await scenario.wait("verification.failed", env="staging", version="1.0.1", timeout=60)
    assert failed.data.reason == "superseded at 10% of traffic by the deployment of 1.0.2 (promotion)"
    await scenario.wait("deployment.progressed", env="staging", version="1.0.2", step=1, timeout=60)
    rows = await scenario.query("deployer", "select deployment_id, state from canaries where service = $1 "
                                "order by updated_at", scenario.service)
    assert [row["state"] for row in rows] == ["done", "running"]
    assert failed.data.superseded_by == rows[1]["deployment_id"]
    assert scenario.seen("rollback.ordered", env="staging") == [], "no rollback undoes the newer release"
