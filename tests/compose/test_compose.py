"""compose.yaml brought up for real with podman-compose, and one image promoted through it.

The stack comes up from compose.yaml as it is, plus tests/compose/local.yaml, which only swaps the public images
(none can be pulled here) for one local Debian image with the same programs; promote:dev is built from the
Dockerfile FROM that image. The example image is pushed as CI to the compose registry (published on loopback),
its build is published through the `cli` service, and `promote status --json` shows its digest verified in the
last environment. The stack is taken down, volumes too, whatever happens."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from devstack import containers, kafka
from devstack import processes as p
from shared.platform.settings import Settings
from tests.compose import base_image

sys.path.insert(0, str(p.REPO_ROOT / "examples" / "payments"))
from build_image import build_image, push  # noqa: E402  (the example's own image build)

pytestmark = [pytest.mark.e2e, pytest.mark.compose]

PROJECT = "promote-compose-test"
"""The compose project: its containers, volumes and network are named after it, apart from anything else."""
SERVICES = ("intake", "gates", "deployer", "rollback", "ledger", "notifier", "api")
SERVICE, VERSION = "hello-compose", "1.0.0"
PIPELINE = f"""\
service: {SERVICE}
artifact: {{kind: oci}}
environments:
  - {{name: dev, driver: noop}}
  - {{name: test, driver: noop, gates: [{{evidence: unit-tests}}]}}
  - {{name: prod, driver: noop}}
"""
HOST_CA = Path("/etc/ssl/certs")
"""The machine's trust store, lent to the build so that pip trusts what the host's pip trusts."""


def free_port() -> int:
    """A loopback port nothing listens on now (the dev stack's ports stay untouched)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Compose:
    """podman-compose on compose.yaml + tests/compose/local.yaml as PROJECT, with podman pointed at var/containers."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.argv = [str(Path(sys.executable).with_name("podman-compose")), "-p", PROJECT, "--profile", "tools",
                     "-f", str(p.REPO_ROOT / "compose.yaml"), "-f", str(Path(__file__).with_name("local.yaml"))]

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """Run one podman-compose command; on failure the error names it with its output's tail."""
        res = subprocess.run([*self.argv, *args], env=self.env, cwd=p.REPO_ROOT, capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)} exited {res.returncode}\n"
                                 f"{(res.stdout + res.stderr)[-4000:]}")
        return res

    def cli(self, *args: str) -> str:
        """`promote ARGS` in a fresh `cli` container (the stack already runs: --no-deps); its stdout."""
        return self("run", "--rm", "-T", "--no-deps", "-v", f"{self.env['PIPELINES']}:/pipelines:ro", "cli",
                    *args).stdout

    def logs(self) -> str:
        """Every container's log tail, for a failure's message."""
        res = self("logs", "--tail", "30", check=False, timeout=60)
        return (res.stdout + res.stderr)[-12000:]


def podman(*args: str) -> str:
    """`podman ARGS` against the stack's storage; its stdout, or AssertionError with stderr."""
    res = containers.podman(*args)
    assert res.returncode == 0, f"podman {' '.join(args)} exited {res.returncode}: {res.stderr[-3000:]}"
    return res.stdout


def build_project_image(base: str) -> None:
    """promote:dev from the Dockerfile FROM the local base (layers cached by podman: a later run rebuilds only the
    layers whose inputs changed); the image it replaces is removed, not left dangling."""
    before = containers.podman("image", "inspect", "--format", "{{.Id}}", "promote:dev").stdout.strip()
    mounts = ["-v", f"{HOST_CA}:{HOST_CA}:ro"] if HOST_CA.is_dir() else []
    podman("build", "--layers", "-t", "promote:dev", "--build-arg", f"BASE={base}", *mounts, str(p.REPO_ROOT))
    if before and before != podman("image", "inspect", "--format", "{{.Id}}", "promote:dev").strip():
        containers.podman("rmi", before)  # refused (and kept) while a container still uses it


def healthy(container: str) -> bool:
    """The container's compose healthcheck passes now (podman 4.3 runs healthchecks only when asked: no systemd)."""
    return containers.podman("healthcheck", "run", container).returncode == 0


def wait_healthy(names: list[str], timeout: float = 150.0) -> None:
    """Until each service's own compose healthcheck passes; AssertionError naming those that did not."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        pending = [name for name in pending if not healthy(f"{PROJECT}_{name}_1")]
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"not healthy after {timeout:.0f} s: {', '.join(pending)}")
        if pending:
            time.sleep(0.5)


def start_order() -> list[list[str]]:
    """compose.yaml's services (those without a profile) in waves: each wave's dependencies are in earlier ones."""
    services = {name: spec for name, spec in YAML(typ="safe").load(p.REPO_ROOT / "compose.yaml")["services"].items()
                if not spec.get("profiles")}
    waves, placed = [], set()
    while len(placed) < len(services):
        wave = sorted(name for name, spec in services.items()
                      if name not in placed and set(spec.get("depends_on", {})) <= placed)
        assert wave, f"compose.yaml's depends_on has a cycle among {set(services) - placed}"
        waves.append(wave)
        placed.update(wave)
    return waves


def bring_up(stack: "Compose") -> None:
    """Start the services wave by wave, each once its depends_on conditions hold, as docker compose does. podman 4.3
    cannot be left to podman-compose here: it ignores service_healthy, does not check that a completed dependency
    exited 0, and starts a service's exited dependencies again with every dependent (setup and init would run
    once per service, and the container churn stalls podman's DNS for seconds at a time)."""
    conditions = {name: spec.get("depends_on", {}) for name, spec in
                  YAML(typ="safe").load(p.REPO_ROOT / "compose.yaml")["services"].items()}
    t0 = time.monotonic()
    for wave in start_order():
        for dependency, condition in {d: c["condition"] for name in wave for d, c in conditions[name].items()}.items():
            container = f"{PROJECT}_{dependency}_1"
            if condition == "service_completed_successfully":
                code = podman("wait", container).strip()
                log = containers.podman("logs", container)
                assert code == "0", f"{dependency} exited {code}:\n{(log.stdout + log.stderr)[-3000:]}"
            elif condition == "service_healthy":
                wait_healthy([dependency])
        stack("up", "-d", "--no-deps", *wave)
        print(f"compose: +{time.monotonic() - t0:.0f} s started {', '.join(wave)}")


def wait_verified_in(compose: Compose, env: str, digest: str, timeout: float = 120.0) -> dict:
    """`promote status --json` until the digest is verified in `env`; the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(compose.cli("status", SERVICE, "--json"))
        where = status["environments"][env]
        if (where["digest"], where["state"]) == (digest, "verified"):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{SERVICE} not verified in {env} after {timeout:.0f} s: {json.dumps(status)}\n"
                                 f"--- container logs ---\n{compose.logs()}")
        time.sleep(1)


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[Compose]:
    """The stack up from compose.yaml (images built first), and down with its volumes afterwards."""
    try:
        containers.ensure_installed()
    except p.StackError as error:
        pytest.skip(f"podman cannot be installed on this machine: {error}")
    containers.write_config()  # CONTAINERS_CONF: runc and the sandbox's ulimits (devstack/containers.py)
    t0 = time.monotonic()
    was_cached = base_image.cached()
    base = base_image.ensure()
    build_project_image(base)
    built = time.monotonic()
    (tmp_path / "pipelines").mkdir()
    env = {**os.environ, **containers.environment(), "PROMOTE_BASE_IMAGE": base,
           "PROMOTE_KAFKA_LIBS": str(kafka.fetch()), "PROMOTE_COMPOSE_REGISTRY_PORT": str(free_port()),
           "PIPELINES": str(tmp_path / "pipelines")}
    stack = Compose(env)
    stack("down", "-v", "-t", "5", check=False)  # what a run killed half-way left behind
    try:
        bring_up(stack)
        wait_healthy(list(SERVICES))
        print(f"compose: base image {'cached' if was_cached else 'built'}, images {built - t0:.0f} s, "
              f"up and healthy {time.monotonic() - built:.0f} s")
        yield stack
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- container logs ---\n{stack.logs()}") from None
    finally:
        stack("down", "-v", "-t", "5", check=False, timeout=180)
        left = [name for name in podman("volume", "ls", "--format", "{{.Name}}").split()
                if name.startswith(f"{PROJECT}_")]
        assert not left, f"volumes left behind: {', '.join(left)}"


@pytest.mark.timeout(1800)  # a first run builds the base image (debootstrap, a few minutes); a later one takes ~3
def test_compose_yaml_brings_the_stack_up_and_an_image_is_promoted_to_the_last_environment_by_digest(
        compose: Compose):
    t0 = time.monotonic()
    password = compose("run", "--rm", "-T", "--no-deps", "--entrypoint", "cat", "cli",
                       "/var/lib/promote/credentials/registry/ci").stdout.strip()  # as README's compose section says
    port = compose.env["PROMOTE_COMPOSE_REGISTRY_PORT"]
    host = Settings(registry=f"127.0.0.1:{port}", registry_username="ci", registry_password=password)
    image = build_image(VERSION)
    assert asyncio.run(push(image, f"127.0.0.1:{port}/{SERVICE}:{VERSION}", host)) == image.digest

    (Path(compose.env["PIPELINES"]) / "pipeline.yaml").write_text(PIPELINE)
    compose.cli("pipeline", "apply", "/pipelines/pipeline.yaml")
    published = compose.cli("build-completed", "--service", SERVICE, "--version", VERSION, "--commit", "c0ffee",
                            "--author", "alice", "--image", f"registry:5000/{SERVICE}:{VERSION}")
    assert image.digest in published  # the digest the compose registry answered for the tag: the pushed bytes
    wait_verified_in(compose, "dev", image.digest)
    compose.cli("evidence", SERVICE, VERSION, "--env", "dev", "--check", "unit-tests", "--result", "passed")
    status = wait_verified_in(compose, "prod", image.digest)
    assert {env: (where["version"], where["digest"], where["state"]) for env, where in
            status["environments"].items()} == {env: (VERSION, image.digest, "verified") for env in ("dev", "test",
                                                                                                  "prod")}
    print(f"compose: promoted through dev, test and prod in {time.monotonic() - t0:.0f} s")
