"""Unit tests for the local driver's user switch: a deployer running as root never runs an app as root.

They start real processes (a tiny script, and the example payments app, fetched into a real
store) as the unprivileged `nobody`, which every Linux system has, so no account is created.
"""

import hashlib
import os
import pwd
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from services.deployer.domain import Target
from services.deployer.driver import LocalDriver, StartFailed
from shared.artifacts import ArtifactStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)")
SCRIPT = b"#!/usr/bin/env python3\nimport time\ntime.sleep(30)\n"  # finds python3 as the app user
DIGEST = "sha256:" + hashlib.sha256(SCRIPT).hexdigest()


@pytest.fixture
def base():
    """A directory `nobody` may enter (pytest's tmp_path lives under a private 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="promote-driver-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


def stored_script(base: Path, content: bytes = SCRIPT) -> str:
    """Put an artifact through the store as intake does, group-owned by nobody's group; its digest."""
    (base / "drop").mkdir(exist_ok=True)
    (base / "drop" / "app").write_bytes(content)
    (base / "drop" / "app").chmod(0o644)  # not executable where CI left it
    store = ArtifactStore(base / "store", [base / "drop"], max_bytes=1 << 20, timeout_s=10,
                          group=pwd.getpwnam("nobody").pw_gid)
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    store.fetch(f"file://{base}/drop/app", digest)
    return digest


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def settled_command_line(driver: LocalDriver, pid: int, timeout: float = 5.0) -> list[str]:
    """The argv once `env` has exec'd the interpreter: during that exec /proc/<pid>/cmdline reads empty."""
    deadline = time.monotonic() + timeout
    while (argv := driver.command_line(pid)) == [""] and time.monotonic() < deadline:
        time.sleep(0.01)  # no event tells when another process's exec is done; bounded by the deadline
    return argv


def test_an_app_started_by_a_root_deployer_runs_as_the_app_user_with_no_extra_groups(base):
    stored_script(base)
    driver = LocalDriver(base / "store", base / "run", base / "log", app_user="nobody")
    nobody = pwd.getpwnam("nobody")

    pid = driver.start(target(DIGEST), "dev", {"PORT": "1"})
    try:
        status = status_of(pid)
        assert status["Uid"].split() == [str(nobody.pw_uid)] * 4
        assert status["Gid"].split() == [str(nobody.pw_gid)] * 4
        assert status["Groups"] == ""
        assert str(driver.artifact_path(DIGEST)) in settled_command_line(driver, pid)  # what verify and re-attach read
    finally:
        driver.stop("svc", "dev", pid)


async def test_the_example_app_runs_as_the_app_user_and_passes_the_driver_s_verification(base):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "payments"))
    from build import build  # the example's own build script

    build("9.9.9", base / "built.pyz")
    digest = stored_script(base, (base / "built.pyz").read_bytes())
    driver = LocalDriver(base / "store", base / "run", base / "log", app_user="nobody")
    port = free_port()

    pid = driver.start(target(digest), "dev", {"PORT": str(port)})
    try:
        checks = await driver.verify(target(digest, "9.9.9"), "dev", pid, port)
        assert checks == {"health": "passed", "version": "passed", "process": "passed", "digest": "passed"}, \
            (base / "log" / "svc--dev.log").read_text()
        assert status_of(pid)["Uid"].split()[0] == str(pwd.getpwnam("nobody").pw_uid)
    finally:
        driver.stop("svc", "dev", pid)


def target(digest: str, version: str = "1.0.0") -> Target:
    return Target("deployment-1", "svc", "dev", version, digest, {}, "cfg")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_missing_app_user_fails_the_start_instead_of_running_the_app_as_root(base):
    stored_script(base)
    driver = LocalDriver(base / "store", base / "run", base / "log", app_user="no-such-user-here")

    with pytest.raises(StartFailed, match="the app user 'no-such-user-here' does not exist"):
        driver.start(target(DIGEST), "dev", {"PORT": "1"})


def test_a_store_the_app_user_cannot_enter_fails_the_start_with_the_directory_that_blocks_it(base):
    stored_script(base)
    base.chmod(0o700)
    driver = LocalDriver(base / "store", base / "run", base / "log", app_user="nobody")

    with pytest.raises(StartFailed, match=f"the app user nobody may not enter {base}"):
        driver.start(target(DIGEST), "dev", {"PORT": "1"})


@pytest.mark.parametrize(("content", "says"), [
    (b"this is not an executable\n", "not an executable (neither ELF nor a #! line)"),
    (b"#!/no/such/interpreter\nexit 0\n", "its #! interpreter '/no/such/interpreter' is not an executable path"),
    (b"#!python3\n", "its #! interpreter 'python3' is not an executable path"),
])
def test_what_the_kernel_could_not_execute_is_refused_before_anything_is_stopped(base, content, says):
    digest = stored_script(base, content)
    driver = LocalDriver(base / "store", base / "run", base / "log", app_user="nobody")
    with pytest.raises(StartFailed, match=re.escape(f"cannot start {digest}: {says}")):
        driver.preflight(target(digest), "dev")


def test_a_script_with_an_interpreter_that_exists_passes_the_preflight(base):
    digest = stored_script(base)
    LocalDriver(base / "store", base / "run", base / "log", app_user="nobody").preflight(target(digest), "dev")
