"""Drift on the real parts: what runs is changed by hand (another image run on a prod slot's port with podman, a
container stopped, a process killed) and the deployer notices within its interval (drift.detected naming what
differs), restores the promoted release where the pipeline says `on_drift: restore` (drift.resolved, how=restore),
or only reports it (status says drifted) until a promotion resolves it; `promote drift` checks at once.
"""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from devstack import containers, registry
from services.deployer.container import LABEL, container_name
from shared.contracts.pipeline import parse_pipeline
from shared.platform.settings import Settings
from tests.e2e.support import api_token, promote_async
from tests.e2e.test_container_driver import containers_of, publish_image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "payments"))
from build_image import build_image, push  # noqa: E402  (the example's own image build)

pytestmark = pytest.mark.e2e

IMAGES = """
service: {service}
artifact: {{kind: oci}}
environments:
  - name: prod
    on_drift: restore
    config: {{APP_ENV: prod}}
"""
FILES = """
service: {service}
environments:
  - name: prod
    on_drift: ON_DRIFT
    config: {{APP_ENV: prod, FEATURE_NEW_UI: "false"}}
"""
WITHIN = Settings().drift_check_interval_s + 20
"""A drift is reported within the deployer's interval; the rest is one round's looks and the relay."""


@pytest.fixture
async def restoring(scenario):
    """The scenario, whose prod is set back to `on_drift: report` before its teardown stops the apps by hand (else
    the deployer would restore them behind the finished test)."""
    yield scenario
    from cli.ops import pipeline_applied

    definition = parse_pipeline(RESTORED[scenario.service].replace("on_drift: restore", "on_drift: report"))
    await scenario.send(pipeline_applied(definition, "test"))
    deadline = asyncio.get_running_loop().time() + 30
    while await scenario.query("deployer", "select 1 from drift_policies where service = $1 and on_drift = 'restore'",
                               scenario.service):
        assert asyncio.get_running_loop().time() < deadline, "the deployer kept on_drift: restore"
        await asyncio.sleep(0.1)


RESTORED: dict[str, str] = {}
"""The pipeline each restoring test applied, by service."""


async def promoted_image(scenario, version: str = "1.0.0") -> tuple[str, int]:
    """An image promoted into prod: (its digest, prod's port)."""
    RESTORED[scenario.service] = IMAGES.format(service=scenario.service)
    await scenario.apply_pipeline(IMAGES)
    digest = await publish_image(scenario, version)
    await scenario.wait("verification.passed", env="prod", version=version, timeout=90)
    port = scenario.seen("deployment.succeeded", env="prod", version=version)[0].data.port
    return digest, port


async def promoted_file(scenario, on_drift: str, version: str = "1.0.0") -> tuple[str, int]:
    """A file promoted into prod, run by the local driver: (its digest, prod's port)."""
    RESTORED[scenario.service] = FILES.replace("ON_DRIFT", on_drift).format(service=scenario.service)
    await scenario.apply_pipeline(FILES.replace("ON_DRIFT", on_drift))
    path, digest = scenario.build(version)
    await scenario.send(scenario.build_completed(version, path, digest))
    await scenario.wait("verification.passed", env="prod", version=version, timeout=60)
    port = scenario.seen("deployment.succeeded", env="prod", version=version)[0].data.port
    return digest, port


async def version_on(port: int) -> str:
    async with httpx.AsyncClient(timeout=3.0) as client:
        return (await client.get(f"http://127.0.0.1:{port}/version")).json()["version"]


def app_pid(scenario) -> int:
    record = scenario.settings.var_dir / "run" / "apps" / f"{scenario.service}--prod.json"
    return json.loads(record.read_text())["pid"]


async def just_checked(scenario, env: str = "prod") -> None:
    """Return right after a drift round checked the environment, so that a change made now is seen whole by the
    next round (the deployer's own record of its last check, polled with a bound)."""
    async def last() -> object:
        rows = await scenario.query("deployer", "select checked_at from drift where service = $1 and env = $2",
                                    scenario.service, env)
        return rows[0]["checked_at"] if rows else None

    before = await last()
    deadline = asyncio.get_running_loop().time() + WITHIN
    while await last() == before:
        assert asyncio.get_running_loop().time() < deadline, "no drift check within the interval"
        await asyncio.sleep(0.1)


async def starts(scenario) -> int:
    rows = await scenario.query("deployer", "select count(*) as n from driver_calls where service = $1",
                                scenario.service)
    return rows[0]["n"]


async def test_another_image_run_by_hand_on_the_prod_slots_port_is_detected_and_the_promoted_image_restored(restoring):
    scenario = restoring
    digest, port = await promoted_image(scenario)
    other = await asyncio.to_thread(build_image, "6.6.6", label="by-hand")
    other_digest = await push(other, f"{scenario.settings.registry}/{scenario.service}:by-hand", scenario.settings)
    location = f"{scenario.settings.registry}/{scenario.service}@{other_digest}"
    user, password = registry.credentials("ci")
    assert containers.podman("pull", "--creds", f"{user}:{password}", location).returncode == 0
    by_hand = f"{scenario.service}-by-hand"
    await just_checked(scenario)
    try:
        # Ours goes, another image takes the slot's port: what an operator "fixing" prod by hand does.
        assert containers.podman("rm", "-f", container_name(scenario.service, "prod", 0)).returncode == 0
        run = containers.podman("run", "-d", "--name", by_hand, "-p", f"127.0.0.1:{port}:8080", "-e", "PORT=8080",
                                location)
        assert run.returncode == 0, run.stderr

        detected = await scenario.wait("drift.detected", env="prod", timeout=WITHIN)
        resolved = await scenario.wait("drift.resolved", env="prod", timeout=90)
    finally:
        containers.podman("rm", "-f", "-t", "0", by_hand)

    lines = detected.data.differences
    assert (detected.data.version, detected.data.digest, detected.data.on_drift) == ("1.0.0", digest, "restore")
    assert "nothing of 1.0.0 runs in prod: its containers are gone" in lines
    prefix = f"container {by_hand}, not started by the deployer, publishes port {port} with image "
    assert any(line.startswith(prefix) and other_digest in line for line in lines), lines  # the image's digest
    assert f"port {port} answers version '6.6.6' from something the deployer did not start (promoted '1.0.0')" in lines
    assert (resolved.data.how, resolved.data.digest, resolved.data.drift_id) == ("restore", digest, detected.id)
    restore = scenario.seen("verification.passed", env="prod", purpose="restore")
    assert [event.data.deployment_id for event in restore] == [detected.id]  # the restore answers that drift
    [ours] = [c for c in containers_of(scenario.service, env="prod") if c.status == "running"]
    assert ours.labels[f"{LABEL}digest"] == digest and await version_on(port) == "1.0.0"


async def test_a_stopped_container_is_detected_and_started_again_with_the_promoted_image(restoring):
    scenario = restoring
    digest, port = await promoted_image(scenario)
    assert containers.podman("stop", "-t", "0", container_name(scenario.service, "prod", 0)).returncode == 0

    detected = await scenario.wait("drift.detected", env="prod", timeout=WITHIN)
    resolved = await scenario.wait("drift.resolved", env="prod", timeout=90)

    assert any(line.startswith(f"container {container_name(scenario.service, 'prod', 0)} exited with code")
               for line in detected.data.differences), detected.data.differences
    assert (resolved.data.how, resolved.data.digest) == ("restore", digest)
    [ours] = containers_of(scenario.service, env="prod")
    assert (ours.status, ours.labels[f"{LABEL}digest"], ours.labels[f"{LABEL}deployment_id"]) == \
        ("running", digest, detected.id)
    assert await version_on(port) == "1.0.0"


async def test_a_killed_local_process_is_detected_and_the_promoted_file_started_again(restoring):
    scenario = restoring
    digest, port = await promoted_file(scenario, "restore")
    killed = app_pid(scenario)
    os.kill(killed, signal.SIGKILL)

    detected = await scenario.wait("drift.detected", env="prod", timeout=WITHIN)
    resolved = await scenario.wait("drift.resolved", env="prod", timeout=60)

    assert f"process {killed} not running" in detected.data.differences
    assert (detected.data.driver, detected.data.slot) == ("local", "prod")
    assert (resolved.data.how, resolved.data.digest) == ("restore", digest)
    started = scenario.seen("deployment.started", env="prod", purpose="restore")
    assert [event.data.deployment_id for event in started] == [detected.id]
    assert app_pid(scenario) != killed and await version_on(port) == "1.0.0"
    await scenario.processed_by("ledger", resolved)
    status = json.loads((await promote_async("status", scenario.service, "--json")).stdout)
    assert (status["environments"]["prod"]["state"], status["environments"]["prod"]["drift"]) == ("verified", None)


async def test_in_report_mode_a_drift_is_shown_in_status_nothing_is_restarted_and_a_promotion_resolves_it(scenario):
    await promoted_file(scenario, "report")
    before = await starts(scenario)
    killed = app_pid(scenario)
    os.kill(killed, signal.SIGKILL)

    detected = await scenario.wait("drift.detected", env="prod", timeout=WITHIN)
    assert detected.data.on_drift == "report"
    await scenario.processed_by("ledger", detected)
    status = await promote_async("status", scenario.service, "--json")
    prod = json.loads(status.stdout)["environments"]["prod"]
    assert (prod["state"], prod["drift"]["differences"]) == ("drifted", [f"process {killed} not running"])
    table = await promote_async("status", scenario.service)
    assert "drifted" in table.stdout and f"process {killed} not running" in table.stdout

    path, digest = scenario.build("1.0.1")
    await scenario.send(scenario.build_completed("1.0.1", path, digest))
    resolved = await scenario.wait("drift.resolved", env="prod", timeout=60)

    assert (resolved.data.how, resolved.data.version, resolved.data.digest) == ("promotion", "1.0.1", digest)
    await scenario.processed_by("ledger", resolved)
    assert scenario.seen("deployment.started", purpose="restore") == []
    assert await starts(scenario) == before + 1  # the promotion's start, nothing else
    assert len(scenario.seen("drift.detected", env="prod")) == 1  # once, not at every interval
    prod = json.loads((await promote_async("status", scenario.service, "--json")).stdout)["environments"]["prod"]
    assert (prod["state"], prod["version"], prod["drift"]) == ("verified", "1.0.1", None)


async def test_promote_drift_asks_the_deployer_through_the_api_and_exits_3_while_something_drifted(scenario):
    digest, port = await promoted_file(scenario, "report")
    clean = await promote_async("drift", scenario.service)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.splitlines()[1].split()[:3] == ["prod", "in", "sync"]

    killed = app_pid(scenario)
    os.kill(killed, signal.SIGKILL)
    drifted = await promote_async("drift", scenario.service, "--json")  # checked now, not at the next interval

    assert drifted.returncode == 3, drifted.stderr
    [answer] = json.loads(drifted.stdout)["services"]
    assert answer["environments"]["prod"] == {"state": "drifted", "version": "1.0.0", "digest": digest,
                                              "differences": [f"process {killed} not running"], "reason": None}
    checked = await scenario.wait("drift.checked", request_id=answer["request_id"])
    assert checked.data.requested_by == "admin"
    assert (await scenario.wait("drift.detected", env="prod")).data.differences == [f"process {killed} not running"]
    human = await promote_async("drift", scenario.service, "--env", "prod")
    assert human.returncode == 3 and "DRIFTED" in human.stdout and f"process {killed} not running" in human.stdout
    elsewhere = await promote_async("drift", scenario.service, "--env", "prod",
                                    env={"PROMOTE_TOKEN": api_token("dev-watcher", "viewer:dev")})
    assert (elsewhere.returncode, elsewhere.stderr.strip()) == (
        1, "promote: error: refused: this needs the viewer role in prod (your roles: viewer:dev)")


ROUTED = """
service: {service}
environments:
  - name: prod
    on_drift: restore
    strategy: {{blue_green: {{retire_after: 10m}}}}
    config: {{APP_ENV: prod}}
"""


async def test_a_killed_live_lane_behind_the_router_is_restored_in_the_other_lane_which_takes_the_traffic(restoring):
    scenario = restoring
    RESTORED[scenario.service] = ROUTED.format(service=scenario.service)
    await scenario.apply_pipeline(ROUTED)
    path, digest = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, digest))
    await scenario.wait("verification.passed", env="prod", version="1.0.0", timeout=60)
    router = scenario.seen("deployment.succeeded", env="prod")[0].data.port
    [live] = await scenario.query("deployer", "select live from routes where service = $1", scenario.service)
    record = scenario.settings.var_dir / "run" / "apps" / f"{scenario.service}--prod.{live['live']}.json"
    os.kill(json.loads(record.read_text())["pid"], signal.SIGKILL)

    detected = await scenario.wait("drift.detected", env="prod", timeout=WITHIN)
    resolved = await scenario.wait("drift.resolved", env="prod", timeout=60)

    assert detected.data.slot == f"prod.{live['live']}"
    assert (resolved.data.how, resolved.data.digest) == ("restore", digest)
    [now] = await scenario.query("deployer", "select live from routes where service = $1", scenario.service)
    assert now["live"] != live["live"] and await version_on(router) == "1.0.0"
