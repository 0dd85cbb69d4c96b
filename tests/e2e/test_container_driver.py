"""The container driver on the real parts: images built from source, pushed to the stack's registry, run by
digest on podman through the Docker Engine API, behind the real router for blue/green and canary.

The driver's own tests (exits, removals, limits, bad references) talk to podman directly; the rest go
through the services: build.completed (kind oci) in, verification.passed with the image digest checked out.
"""

import asyncio
import signal
import sys
import time
from pathlib import Path

import docker
import httpx
import pytest

import devstack
from devstack import containers, registry
from services.deployer.container import LABEL, ContainerDriver
from services.deployer.domain import Target
from services.deployer.driver import StartFailed
from services.deployer.router import Router
from shared.contracts.events import Artifact, BuildCompleted, GatePassed, RollbackRequested
from shared.contracts.pipeline import Resources
from tests.e2e.test_strategies import lanes, load, version_through, wait_lane_state

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "payments"))
from build_image import build_image, push  # noqa: E402  (the example's own image build)

pytestmark = pytest.mark.e2e

ROLLING = """
service: {service}
artifact: {{kind: oci}}
environments:
  - name: dev
    config: {{APP_ENV: dev, FEATURE_NEW_UI: "true", DB_DSN: {{secret: {service}/dsn}}}}
  - name: test
    config: {{APP_ENV: test}}
"""
BLUE_GREEN = """
service: {service}
artifact: {{kind: oci}}
environments:
  - name: dev
    strategy: {{blue_green: {{retire_after: 10m}}}}
    replicas: REPLICAS
    config: {{APP_ENV: dev}}
"""
CANARY = """
service: {service}
artifact: {{kind: oci}}
environments:
  - name: staging
    replicas: 2
    strategy:
      canary:
        steps: [10, 50, 100]
        analysis: {{interval: 2s, min_requests: 10, max_error_rate: 0.05, max_p99_ms: 500, max_wait: 20s}}
"""


async def publish_image(scenario, version: str, *, bad: bool = False, faulty: bool = False) -> str:
    """Build the example image (`bad`: unhealthy; `faulty`: half its requests fail), push it as CI, publish
    build.completed for it; the manifest digest."""
    label = "bad" if bad else "faulty" if faulty else ""
    image = await asyncio.to_thread(build_image, version, bad=bad, faulty=faulty)
    reference = f"{scenario.settings.registry}/{scenario.service}:{version}{'-' + label if label else ''}"
    digest = await push(image, reference, scenario.settings)
    await scenario.send(BuildCompleted(service=scenario.service, version=version, commit="c0ffee", author="alice",
                                       artifact=Artifact(kind="oci", uri=reference, digest=digest),
                                       checks={"unit-tests": "passed"}))
    return digest


async def release(scenario, version: str, env: str, *, outcome: str = "verification.passed", **variant):
    """Publish the image of `version` and await `outcome` in `env`."""
    await publish_image(scenario, version, **variant)
    return await scenario.wait(outcome, env=env, version=version, timeout=90)


def engine() -> docker.DockerClient:
    return docker.DockerClient(base_url=f"unix://{containers.socket_path()}")


def containers_of(service: str, **labels: str) -> list:
    """The service's containers (running or not) with these promote.* labels."""
    client = engine()
    try:
        wanted = [f"{LABEL}service={service}", *(f"{LABEL}{key}={value}" for key, value in labels.items())]
        for _ in range(20):  # podman answers 500 "no such container" for one removed while listed: list again
            try:
                return client.containers.list(all=True, filters={"label": wanted}, ignore_removed=True)
            except docker.errors.APIError as error:
                if "no such container" not in str(error):
                    raise
        raise AssertionError("podman kept answering 'no such container'")
    finally:
        client.close()


async def starts(scenario) -> int:
    rows = await scenario.query("deployer", "select count(*) as n from driver_calls where service = $1",
                                scenario.service)
    return rows[0]["n"]


def write_secret(scenario, name: str, value: str) -> None:
    path = scenario.settings.secrets_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")


async def test_an_image_is_promoted_by_digest_into_containers_that_are_verified_by_their_image_digest(scenario):
    write_secret(scenario, f"{scenario.service}/dsn", "postgres://db/secret-value-1")
    await scenario.apply_pipeline(ROLLING)
    digest = await publish_image(scenario, "1.0.0")
    passed = await scenario.wait("verification.passed", env="test", version="1.0.0", timeout=60)
    dev = scenario.seen("verification.passed", env="dev", version="1.0.0")[0]

    location = f"{scenario.settings.registry}/{scenario.service}@{digest}"
    assert (dev.data.driver, dev.data.location, dev.data.digest) == ("container", location, digest)
    assert dev.data.checks == {"digest": "passed", "health": "passed", "version": "passed", "process": "passed"}
    [container] = containers_of(scenario.service, env="dev")
    labels = container.labels
    assert (labels[f"{LABEL}digest"], labels[f"{LABEL}deployment_id"], labels[f"{LABEL}config_version"]) == \
        (digest, dev.data.deployment_id, dev.data.config_version)
    assert location in engine().images.get(container.attrs["Image"]).attrs["RepoDigests"]
    assert container.attrs["Config"]["User"] == "65534:65534"  # the image's user, never root
    assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    environment = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert environment["DB_DSN"] == "postgres://db/secret-value-1"  # resolved by the driver, for the app only
    port = scenario.seen("deployment.succeeded", env="dev", version="1.0.0")[0].data.port
    async with httpx.AsyncClient() as client:
        answer = (await client.get(f"http://127.0.0.1:{port}/version")).json()
    assert (answer["version"], answer["env"], answer["feature_new_ui"]) == ("1.0.0", "dev", True)
    assert passed.data.location == location
    # The secret's value is nowhere on the bus, nor in the deployer's log.
    on_the_bus = [event for event in scenario.watcher.seen(lambda e: True) if "secret-value-1" in event.model_dump_json()]
    assert on_the_bus == []
    assert "secret-value-1" not in (scenario.settings.var_dir / "log" / "deployer.log").read_text(errors="replace")


async def test_a_secret_of_another_service_cannot_be_referenced_and_nothing_starts(scenario):
    write_secret(scenario, "payments/dsn", "postgres://db/payments")
    await scenario.apply_pipeline(ROLLING.replace("{service}/dsn", "payments/dsn"))
    await publish_image(scenario, "1.0.0")
    failed = await scenario.wait("deployment.failed", env="dev", version="1.0.0", timeout=60)
    assert f"is not {scenario.service}'s" in failed.data.reason
    assert containers_of(scenario.service) == [] and await starts(scenario) == 0


async def test_an_unhealthy_image_fails_verification_and_the_environment_returns_to_the_last_verified_one(scenario):
    write_secret(scenario, f"{scenario.service}/dsn", "x")
    await scenario.apply_pipeline(ROLLING)
    good = await publish_image(scenario, "1.0.0")
    await scenario.wait("verification.passed", env="test", version="1.0.0", timeout=60)
    failed = await release(scenario, "1.1.0", "dev", bad=True, outcome="verification.failed")
    assert failed.data.reason.startswith("health: GET /health answered 500")
    completed = await scenario.wait("rollback.completed", env="dev", timeout=60)

    assert (completed.data.version, completed.data.digest) == ("1.0.0", good)
    [container] = containers_of(scenario.service, env="dev")
    assert container.labels[f"{LABEL}digest"] == good and container.status == "running"


async def test_blue_green_with_containers_switches_under_load_and_rolls_back_by_switching_back(scenario):
    await scenario.apply_pipeline(BLUE_GREEN.replace("REPLICAS", "1"))
    await release(scenario, "1.0.0", "dev")
    port = (await scenario.wait("deployment.succeeded", env="dev")).data.port
    async with load(port) as report:
        switched = await release(scenario, "1.0.1", "dev")
        assert await version_through(port) == "1.0.1"
        started_before = await starts(scenario)
        await scenario.send(RollbackRequested(service=scenario.service, env="dev", requested_by="bob"))
        done = await scenario.wait("rollback.completed", env="dev", timeout=60)
        assert await version_through(port) == "1.0.0"
    report = report.result()
    print(f"\ncontainers blue/green: {switched.data.checks['switch']}; {report.sent} requests, {report.failed} failed")
    assert report.failed == 0 and report.sent >= 100
    assert done.data.version == "1.0.0"
    assert await starts(scenario) == started_before, "a switch back starts nothing"
    # The release rolled back from retires at once (a rollback switch keeps nothing warm): its containers go.
    retired = next(lane for lane, row in (await lanes(scenario, "dev")).items() if row["version"] == "1.0.1")
    await wait_lane_state(scenario, "dev", retired, "retired")
    assert [c.labels[f"{LABEL}version"] for c in containers_of(scenario.service)] == ["1.0.0"]


async def test_three_replicas_serve_the_environment_from_three_containers(scenario):
    await scenario.apply_pipeline(BLUE_GREEN.replace("REPLICAS", "3"))
    passed = await release(scenario, "1.0.0", "dev")
    assert passed.data.checks["replicas"] == "3 of 3 verified" and passed.data.replicas == 3
    port = (await scenario.wait("deployment.succeeded", env="dev")).data.port
    running = containers_of(scenario.service, env="dev")
    assert len(running) == 3 and {c.status for c in running} == {"running"}
    published = {int(c.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]) for c in running}
    async with httpx.AsyncClient(timeout=3.0) as client:
        for _ in range(30):
            assert (await client.get(f"http://127.0.0.1:{port}/version")).json()["version"] == "1.0.0"
    log = Router(scenario.settings.var_dir / "router").access_log(scenario.service, "dev").read_text()
    served = {int(line.rsplit('"upstream":"127.0.0.1:', 1)[1].split('"', 1)[0]) for line in log.splitlines()
              if '"upstream":"127.0.0.1:' in line}
    assert served == published, "the router spreads the requests over the three containers"


async def test_a_faulty_canary_on_containers_is_aborted_and_a_good_one_reaches_100_percent(scenario):
    await scenario.apply_pipeline(CANARY)
    await release(scenario, "1.0.0", "staging")
    port = (await scenario.wait("deployment.succeeded", env="staging")).data.port
    async with load(port) as report:
        failed = await release(scenario, "1.0.1", "staging", faulty=True, outcome="verification.failed")
        await scenario.wait("rollback.completed", env="staging", timeout=60)
        assert await version_through(port) == "1.0.0"
        passed = await release(scenario, "1.0.2", "staging")
        assert await version_through(port) == "1.0.2"
    report = report.result()
    print(f"\ncontainers canary: {failed.data.reason}; good canary steps "
          f"{passed.data.checks['step_10_requests']}/{passed.data.checks['step_50_requests']} requests")
    assert failed.data.reason.startswith("canary analysis at 10% of traffic: error rate")
    assert int(passed.data.checks["step_10_requests"]) >= 10 and float(passed.data.checks["step_50_error_rate"]) == 0
    assert containers_of(scenario.service, version="1.0.1") == []  # the aborted canary's containers are gone
    assert 0 < report.failed / report.sent < float(failed.data.checks["error_rate"])


async def test_a_deployer_killed_mid_deployment_reattaches_to_its_container_and_finishes_once(scenario):
    await scenario.apply_pipeline(ROLLING.replace(", DB_DSN: {{secret: {service}/dsn}}", ""))
    await publish_image(scenario, "1.0.0")
    started = await scenario.wait("deployment.started", env="dev", version="1.0.0", timeout=60)
    deadline = time.monotonic() + 30
    while not [c for c in containers_of(scenario.service, env="dev") if c.status == "running"]:
        assert time.monotonic() < deadline, "no container started"
        await asyncio.sleep(0.02)  # the engine's state, polled: no event says a container runs
    devstack.stop_service("deployer", sig=signal.SIGKILL)
    devstack.start_service("deployer")
    passed = await scenario.wait("verification.passed", env="test", version="1.0.0", timeout=90)

    dev = scenario.seen("verification.passed", env="dev", version="1.0.0")
    assert [event.data.deployment_id for event in dev] == [started.data.deployment_id]  # finished once
    assert len(containers_of(scenario.service, env="dev")) == 1
    calls = await scenario.query("deployer", "select env from driver_calls where service = $1", scenario.service)
    assert sorted(row["env"] for row in calls) == ["dev", "test"]  # dev's container was never started again
    assert passed.data.digest == started.data.digest

    # A redelivered order after another restart finds the containers by their labels, and starts nothing.
    order = scenario.seen("gate.passed", env="test", version="1.0.0")[0]
    devstack.stop_service("deployer", sig=signal.SIGKILL)
    devstack.start_service("deployer")
    await scenario.send(GatePassed(**order.data.model_dump()), as_principal="gates")
    await scenario.watcher.wait_for(
        lambda e: e.envelope.type == "verification.passed" and e.data.service == scenario.service
        and e.data.env == "test" and e.data.deployment_id != passed.data.deployment_id, 60, "the re-attached order")
    assert await starts(scenario) == 2


# The driver itself, against podman and the registry (no services).

@pytest.fixture
async def image(scenario):
    """The example image in the registry: (target for slot `dev`, driver)."""
    built = await asyncio.to_thread(build_image, "3.0.0")
    reference = f"{scenario.settings.registry}/{scenario.service}:3.0.0"
    digest = await push(built, reference, scenario.settings)
    driver = ContainerDriver(scenario.settings.container_engine, registries=scenario.settings.image_registries,
                             login=registry.credentials("deployer"))
    target = Target("deployment-1", scenario.service, "dev", "3.0.0", digest, {}, "sha256:" + "0" * 64,
                    driver="container", location=f"{scenario.settings.registry}/{scenario.service}@{digest}")
    yield target, driver
    await asyncio.to_thread(driver.stop, scenario.service, "dev", 0, 0)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_container_that_exits_or_is_removed_is_seen_by_the_driver(image):
    target, driver = image
    port = free_port()
    await asyncio.to_thread(driver.preflight, target, "dev")
    pid = await asyncio.to_thread(driver.start, target, "dev", {"PORT": str(port), "BUILD_VERSION": "3.0.0"})
    assert (await driver.verify(target, "dev", pid, port))["process"] == "passed"
    assert driver.launched(target.service, "dev").alive

    [container] = containers_of(target.service)
    container.kill()
    container.wait()
    seen = driver.launched(target.service, "dev")
    assert (seen.alive, seen.leftover, seen.digest) == (False, True, target.digest)
    checks = await driver.verify(target, "dev", pid, port, timeout=1.0)
    assert checks["process"].startswith(f"container {container.name} exited with code")

    container.remove(force=True)
    assert driver.launched(target.service, "dev") is None
    assert (await driver.verify(target, "dev", pid, port))["process"] == "0 of 1 containers exist"


async def test_memory_and_cpu_limits_reach_the_container(image):
    target, driver = image
    limited = Target(**{**target.__dict__, "resources": Resources(memory="64m", cpus=0.5)})
    await asyncio.to_thread(driver.preflight, limited, "dev")
    await asyncio.to_thread(driver.start, limited, "dev", {"PORT": str(free_port()), "BUILD_VERSION": "3.0.0"})
    [container] = containers_of(target.service)
    assert container.attrs["HostConfig"]["Memory"] == 64 * 2**20
    assert container.attrs["HostConfig"]["NanoCpus"] == 500_000_000


@pytest.mark.parametrize(("location", "says"), [
    ("elsewhere.example:5000/{service}@{digest}", "registry elsewhere.example:5000 is not one the deployer pulls from"),
    ("{registry}/no-such-repository@{digest}", "cannot pull {registry}/no-such-repository@{digest}: "),
    ("{registry}/{service}@sha256:" + "1" * 64, "does not name digest {digest}"),
    (None, "the container driver runs images, and this release is a file"),
])
async def test_bad_image_references_are_refused_in_one_line_before_anything_stops(image, location, says):
    target, driver = image
    fields = dict(registry=target.location.partition("/")[0], service=target.service, digest=target.digest)
    bad = Target(**{**target.__dict__, "location": None if location is None else location.format(**fields)})
    with pytest.raises(StartFailed) as refused:
        await asyncio.to_thread(driver.preflight, bad, "dev")
    assert says.format(**fields) in str(refused.value) and "\n" not in str(refused.value)


async def test_an_image_that_would_run_as_root_runs_as_the_unprivileged_container_user(scenario):
    import json

    from build_image import LAYER_TAR, Image, image_manifest

    built = await asyncio.to_thread(build_image, "3.0.0")
    config = json.loads(built.config)
    config["config"]["User"] = ""  # no user: an engine would run it as root
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    rooted = Image("3.0.0", config_bytes, built.layers, image_manifest(config_bytes, [(built.layers[0], LAYER_TAR)]))
    reference = f"{scenario.settings.registry}/{scenario.service}:root"
    digest = await push(rooted, reference, scenario.settings)
    driver = ContainerDriver(scenario.settings.container_engine, registries=scenario.settings.image_registries,
                             login=registry.credentials("deployer"))
    target = Target("deployment-1", scenario.service, "dev", "3.0.0", digest, {}, "sha256:" + "0" * 64,
                    driver="container", location=f"{scenario.settings.registry}/{scenario.service}@{digest}")
    port = free_port()
    await asyncio.to_thread(driver.preflight, target, "dev")
    pid = await asyncio.to_thread(driver.start, target, "dev", {"PORT": str(port), "BUILD_VERSION": "3.0.0"})

    assert (await driver.verify(target, "dev", pid, port))["process"] == "passed"
    [container] = containers_of(scenario.service)
    assert container.attrs["Config"]["User"] == "65534:65534"
    status = Path(f"/proc/{container.attrs['State']['Pid']}/status").read_text()
    assert next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:] == ["65534"] * 4
