"""Progressive delivery through the real router (nginx), with real traffic from the load generator.

Blue/green switches under continuous load without a failed request and rolls back by switching
back to the warm slot; a bad canary is aborted at its first step with the failed share reported;
a good canary reaches 100 %; a feature-flag change redeploys the same digest with its new config.
"""

import asyncio
import time
from contextlib import asynccontextmanager

import httpx
import pytest

import devstack

from services.deployer.analysis import read_outcomes
from services.deployer.router import Router
from shared.contracts.events import RollbackRequested
from shared.loadgen import LoadReport, generate

pytestmark = pytest.mark.e2e

BLUE_GREEN = """
service: {service}
environments:
  - name: dev
    strategy: {{blue_green: {{retire_after: RETIRE_AFTER}}}}
    config: {{APP_ENV: dev}}
"""
CANARY = """
service: {service}
environments:
  - name: staging
    strategy:
      canary:
        steps: [10, 50, 100]
        analysis: {{interval: 2s, min_requests: 10, max_error_rate: 0.05, max_p99_ms: 500, max_wait: 20s}}
    config: {{APP_ENV: staging}}
"""
FLAGS = """
service: {service}
environments:
  - name: staging
    config: {{APP_ENV: staging, FEATURE_NEW_UI: "true"}}
  - name: prod
    config: {{APP_ENV: prod, FEATURE_NEW_UI: "PROD_FLAG"}}
"""
RATE = 100.0


async def release(scenario, version: str, env: str, *, faulty: bool = False, outcome: str = "verification.passed"):
    """Build `version`, publish its build.completed and await `outcome` in `env`; returns that event."""
    path, digest = scenario.build(version, faulty=faulty)
    await scenario.send(scenario.build_completed(version, path, digest))
    return await scenario.wait(outcome, env=env, version=version, timeout=90)


async def router_port(scenario, env: str) -> int:
    """The router's port for the environment (deployment.succeeded names it)."""
    return (await scenario.wait("deployment.succeeded", env=env)).data.port


async def version_through(port: int) -> str:
    async with httpx.AsyncClient(timeout=3.0) as client:
        return (await client.get(f"http://127.0.0.1:{port}/version")).json()["version"]


@asynccontextmanager
async def load(port: int):
    """Continuous traffic through the router until the block ends; yields a future of the LoadReport."""
    stop = asyncio.Event()
    task = asyncio.create_task(generate(f"http://127.0.0.1:{port}", rate=RATE, duration=300, stop=stop))
    result: asyncio.Future[LoadReport] = asyncio.get_running_loop().create_future()
    try:
        yield result
    finally:
        stop.set()
        report = await task
        result.set_result(report)


async def lanes(scenario, env: str) -> dict[str, dict]:
    rows = await scenario.query("deployer", "select * from lanes where service = $1 and env = $2",
                                scenario.service, env)
    return {row["lane"]: dict(row) for row in rows}


async def wait_lane_state(scenario, env: str, lane: str, state: str, timeout: float = 30.0) -> None:
    """Poll the deployer's lane table (bounded) until `lane` reaches `state`."""
    deadline = time.monotonic() + timeout
    while (await lanes(scenario, env))[lane]["state"] != state:
        if time.monotonic() > deadline:
            raise TimeoutError(f"lane {lane} did not become {state} within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def starts(scenario) -> int:
    rows = await scenario.query("deployer", "select count(*) as n from driver_calls where service = $1",
                                scenario.service)
    return rows[0]["n"]


def served_by(scenario, env: str, port: int) -> int:
    """Requests the router sent to `port` for this environment so far (from its access log)."""
    path = Router(scenario.settings.var_dir / "router").access_log(scenario.service, env)
    return len(read_outcomes(path, 0, port)[0])


async def test_blue_green_switches_under_continuous_load_without_one_failed_request(scenario):
    await scenario.apply_pipeline(BLUE_GREEN.replace("RETIRE_AFTER", "2s"))
    await release(scenario, "1.0.0", "dev")
    port = await router_port(scenario, "dev")
    first = await lanes(scenario, "dev")
    async with load(port) as report:
        switched = await release(scenario, "1.0.1", "dev")
        after = await lanes(scenario, "dev")
        old = next(lane for lane, row in first.items() if row["state"] == "live")
        await wait_lane_state(scenario, "dev", old, "retired")  # the old slot is stopped under load too
        assert await version_through(port) == "1.0.1"
    report = report.result()
    print(f"\nblue/green under load: {report.sent} requests, {report.failed} failed; "
          f"{switched.data.checks['switch']}")
    assert report.failed == 0 and report.sent >= 100
    new = next(lane for lane, row in after.items() if row["state"] == "live")
    assert new != old and after[new]["version"] == "1.0.1"
    assert served_by(scenario, "dev", first[old]["port"]) > 0 and served_by(scenario, "dev", after[new]["port"]) > 0
    assert switched.data.checks["router"] == "passed"


async def test_a_blue_green_rollback_switches_back_to_the_warm_slot_without_starting_anything(scenario):
    await scenario.apply_pipeline(BLUE_GREEN.replace("RETIRE_AFTER", "10m"))
    await release(scenario, "1.0.0", "dev")
    port = await router_port(scenario, "dev")
    await release(scenario, "1.0.1", "dev")
    started_before = await starts(scenario)

    async with load(port) as report:
        t0 = time.monotonic()
        await scenario.send(RollbackRequested(service=scenario.service, env="dev", requested_by="bob"))
        done = await scenario.wait("rollback.completed", env="dev")
        seconds = time.monotonic() - t0
        assert await version_through(port) == "1.0.0"
    report = report.result()
    switch = scenario.seen("verification.passed", env="dev", purpose="rollback")[0].data.checks["switch"]
    print(f"\nblue/green rollback: {seconds * 1000:.0f} ms from rollback.requested to rollback.completed "
          f"({switch}); {report.sent} requests, {report.failed} failed")
    assert done.data.version == "1.0.0"
    assert await starts(scenario) == started_before, "a switch back starts nothing"
    assert report.failed == 0


async def test_a_bad_canary_is_aborted_at_its_first_step_and_traffic_returns_to_the_stable_release(scenario):
    await scenario.apply_pipeline(CANARY)
    await release(scenario, "1.0.0", "staging")
    port = await router_port(scenario, "staging")
    async with load(port) as report:
        failed = await release(scenario, "1.0.1", "staging", faulty=True, outcome="verification.failed")
        rolled_back = await scenario.wait("rollback.completed", env="staging")
        assert await version_through(port) == "1.0.0"
    report = report.result()
    checks = failed.data.checks
    print(f"\nbad canary: {failed.data.reason}; overall {report.failed} of {report.sent} requests failed "
          f"({report.failed / report.sent:.1%})")
    assert failed.data.reason.startswith("canary analysis at 10% of traffic: error rate")
    assert checks["aborted_at_share"] == "10%" and float(checks["error_rate"]) > 0.05
    assert int(checks["requests"]) >= 10 and "step_50_requests" not in checks
    assert rolled_back.data.version == "1.0.0"
    # Only the canary's share failed: far fewer than the canary's own error rate.
    assert 0 < report.failed / report.sent < float(checks["error_rate"])
    canary_lane = next(row for row in (await lanes(scenario, "staging")).values() if row["version"] == "1.0.1")
    assert canary_lane["pid"] is None and canary_lane["state"] == "failed"


async def test_a_good_canary_moves_through_every_step_to_100_percent(scenario):
    await scenario.apply_pipeline(CANARY)
    await release(scenario, "1.0.0", "staging")
    port = await router_port(scenario, "staging")
    async with load(port) as report:
        passed = await release(scenario, "1.0.1", "staging")
        assert await version_through(port) == "1.0.1"
    report = report.result()
    checks = passed.data.checks
    shares = {step: int(checks[f"step_{step}_requests"]) for step in (10, 50)}
    print(f"\ngood canary: canary requests per step {shares}, error rates "
          f"{checks['step_10_error_rate']}/{checks['step_50_error_rate']}; {report.failed} of {report.sent} failed")
    assert shares[10] >= 10 and shares[50] >= 10
    assert float(checks["step_10_error_rate"]) == 0 and float(checks["step_50_error_rate"]) == 0
    assert checks["router"] == "passed" and report.failed == 0


async def test_a_flag_change_redeploys_the_same_digest_with_its_new_config_version_and_is_audited(scenario):
    first = await scenario.apply_pipeline(FLAGS.replace("PROD_FLAG", "false"))
    path, digest = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, digest))
    await scenario.wait("verification.passed", env="prod", version="1.0.0")
    ports = {e.data.env: e.data.port for e in scenario.seen("deployment.succeeded")}
    async with httpx.AsyncClient(timeout=3.0) as client:
        ui = {env: (await client.get(f"http://127.0.0.1:{port}/version")).json()["feature_new_ui"]
              for env, port in ports.items()}
    assert ui == {"staging": True, "prod": False}, "one digest, two behaviours"

    changed = await scenario.apply_pipeline(FLAGS.replace("PROD_FLAG", "true"))
    redeployed = await scenario.wait("verification.passed", env="prod", purpose="reconfigure")
    assert redeployed.data.digest == digest and redeployed.data.version == "1.0.0"
    assert redeployed.data.config_version == changed.environment("prod").config_version \
        != first.environment("prod").config_version
    assert redeployed.data.config["FEATURE_NEW_UI"] == "true"
    async with httpx.AsyncClient(timeout=3.0) as client:
        assert (await client.get(f"http://127.0.0.1:{ports['prod']}/version")).json()["feature_new_ui"] is True
    assert scenario.seen("deployment.started", env="staging", purpose="reconfigure") == []
    cause = scenario.seen("pipeline.applied")[-1]
    assert redeployed.correlation_id == cause.correlation_id, "the redeployment names the change that caused it"


async def test_without_the_router_a_routed_deployment_fails_with_one_clear_reason(scenario):
    await scenario.apply_pipeline(BLUE_GREEN.replace("RETIRE_AFTER", "1m"))
    await asyncio.to_thread(devstack.router.stop)
    try:
        failed = await release(scenario, "1.0.0", "dev", outcome="verification.failed")
    finally:
        await asyncio.to_thread(devstack.router.up)
    assert failed.data.reason.startswith("router: nginx is not running"), failed.data.reason
    lane = next(row for row in (await lanes(scenario, "dev")).values() if row["version"] == "1.0.0")
    assert lane["pid"] is None and lane["state"] == "failed", "the release that could not be routed is stopped"
