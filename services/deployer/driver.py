"""The `local` driver: runs an artifact file as a process per environment and checks what runs.

Apps are started in their own session, so they outlive a restart of the deployer;
the deployer re-attaches to them by pid and by the artifact path in their command line.
An app never runs as root: a deployer running as root starts it as the app user (no
supplementary groups, umask 077, a PATH of system directories and that user's HOME).
"""

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Protocol

import httpx

from services.deployer.domain import Running, Target
from services.deployer.drift import Expected, Instance, Observed
from shared.app_user import AppUser, AppUserMissing, app_user, unreachable_at
from shared.artifacts import file_digest

APP_PATH = "/usr/local/bin:/usr/bin:/bin"
"""An app run as the app user finds its interpreter here, not in the deployer's (root's) PATH."""


class Driver(Protocol):
    """What the deployer needs from a driver (local processes, containers, noop; later gitops or kubernetes).

    A slot is where one release runs: an environment (`prod`) or one lane of it (`prod.blue`). The pid
    a start returns identifies what it started (for a container driver, the first container's process).
    Blocking methods are called through asyncio.to_thread.
    """

    def launched(self, service: str, slot: str) -> Running | None:
        """What the driver last started in the slot, and whether it still runs."""
    def preflight(self, target: Target, slot: str) -> None:
        """What can be known before anything running is stopped (the artifact is at hand and can run);
        StartFailed with the reason if not."""
    def start(self, target: Target, slot: str, variables: dict[str, str]) -> int:
        """Run the release in the slot with `variables` as its environment; the pid."""
    def stop(self, service: str, slot: str, pid: int, timeout: float = 5.0) -> None:
        """Stop what runs in the slot (pid: what `launched` reported)."""
    async def verify(self, target: Target, slot: str, pid: int, port: int,
                     timeout: float = 15.0) -> dict[str, str]:
        """The checks: process, digest, health, version ("passed" or why not)."""
    def ports(self, service: str, slot: str, port: int) -> list[int]:
        """The loopback ports the slot serves on (its own port, and one per further replica)."""
    def describe(self, target: Target) -> str:
        """What the deployer records as the slot's artifact: a store path, an image location."""
    async def survey(self) -> object | None:
        """What the driver lists once for a round of drift checks, handed to each `observe` of the round (None:
        nothing to list)."""
    async def observe(self, expected: Expected, http: httpx.AsyncClient, listing: object | None = None) \
            -> Observed | None:
        """What runs in the expected release's slot, for the drift check (None: this driver runs nothing to
        compare); /version is asked with `http`."""
    def evict(self, service: str, slot: str, port: int) -> list[str]:
        """Before a restore: stop what the deployer did not start that holds the slot's port (what was stopped)."""


class StartFailed(Exception):
    """The artifact cannot run: not executable, bad format, refused by the container engine…"""


def check_stored(path: Path, digest: str) -> None:
    """The store holds the artifact file intact (its bytes have `digest`); StartFailed if not."""
    if not path.is_file() or file_digest(path) != digest:
        raise StartFailed(f"the store does not hold {digest} intact")


class LocalDriver:
    """Starts, stops and inspects app processes; each slot is recorded under var/run/apps."""

    def __init__(self, store_dir: Path, run_dir: Path, log_dir: Path, app_user: str = "promote-app") -> None:
        self.store_dir, self.run_dir, self.log_dir = store_dir, run_dir, log_dir
        self.app_user = app_user
        self._children: dict[int, subprocess.Popen] = {}
        self._digests: dict[tuple, str] = {}
        """sha256 of stored files by (path, inode, size, mtime, ctime): a drift check re-hashes only a changed file."""
        self.calls = 0

    def artifact_path(self, digest: str) -> Path:
        """Where the store keeps the artifact with `digest`."""
        return self.store_dir / "sha256" / digest.removeprefix("sha256:")

    def describe(self, target: Target) -> str:
        """The store path of the artifact file."""
        return str(self.artifact_path(target.digest))

    def ports(self, service: str, slot: str, port: int) -> list[int]:
        """One process, on the slot's port."""
        return [port]

    def launched(self, service: str, slot: str) -> Running | None:
        """What this driver last launched in the slot (from its run file), and whether it still runs it."""
        record_path = self.run_dir / f"{service}--{slot}.json"
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            return None
        pid, digest = record.get("pid"), record.get("digest")
        if not pid or not digest:
            return None
        alive = self.is_alive(pid) and str(self.artifact_path(digest)) in self.command_line(pid)
        return Running(pid=pid, digest=digest, config_version=record.get("config_version", ""), alive=alive,
                       deployment_id=record.get("deployment_id", ""))

    def start(self, target: Target, slot: str, variables: dict[str, str]) -> int:
        """Run the artifact file with `variables` as its environment; returns the pid.

        The run file is written right after the fork, so that a deployer killed at any later
        instruction finds the process again (re-attach) instead of starting a second copy.
        """
        service, env, digest, config_version = target.service, slot, target.digest, target.config_version
        self.calls += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{service}--{env}.log"
        user = self._user_for(digest, log_path)
        base = {key: os.environ[key] for key in ("PATH", "LANG", "HOME") if key in os.environ}
        switch = {}
        if user is not None:
            base.update(PATH=APP_PATH, HOME=user.home)
            switch = {"user": user.uid, "group": user.gid, "extra_groups": []}  # []: root's groups dropped
        with log_path.open("ab") as log:  # opened by us, before the switch
            try:
                child = subprocess.Popen(
                    [str(self.artifact_path(digest))], env={**base, **variables}, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.log_dir,
                    umask=0o077, **switch,
                )
            except (OSError, ValueError) as error:  # ValueError: an argument or variable the OS cannot take
                raise StartFailed(f"cannot start {digest}: {error.strerror or error}") from None
        self._children[child.pid] = child
        record = {"pid": child.pid, "service": service, "env": env, "digest": digest,
                  "config_version": config_version, "port": variables["PORT"], "deployment_id": target.deployment_id}
        target = self.run_dir / f"{service}--{env}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        temporary.replace(target)
        return child.pid

    def preflight(self, target: Target, slot: str) -> None:
        """What can be known before anything running is stopped: the store holds the file intact, the app
        user can reach it and its working directory, and the kernel can execute it (ELF, or a `#!` line
        naming an interpreter that exists). StartFailed with the reason if not."""
        digest = target.digest
        path = self.artifact_path(digest)
        check_stored(path, digest)
        self._user_for(digest, self.log_dir / f"{target.service}--{slot}.log")
        try:
            with path.open("rb") as file:
                head = file.read(256)
        except OSError as error:
            raise StartFailed(f"cannot start {digest}: {error.strerror}") from None
        if head.startswith(b"\x7fELF"):
            return
        if not head.startswith(b"#!"):
            raise StartFailed(f"cannot start {digest}: not an executable (neither ELF nor a #! line)")
        interpreter = head[2:].split(b"\n", 1)[0].strip().split(b" ", 1)[0]
        if not interpreter.startswith(b"/") or not os.access(interpreter, os.X_OK):
            shown = interpreter.decode(errors="replace")[:64]
            raise StartFailed(f"cannot start {digest}: its #! interpreter {shown!r} is not an executable path")

    def _user_for(self, digest: str, log: Path) -> AppUser | None:
        """The app user to run as (None: not root, run as ourselves), checked able to reach the artifact
        and its working directory (the log's)."""
        try:
            user = app_user(self.app_user)
        except AppUserMissing as error:
            raise StartFailed(f"cannot start {digest}: {error}") from None
        if user is not None:
            for path in (self.artifact_path(digest), log):
                blocked = unreachable_at(user, path)
                if blocked is not None:
                    raise StartFailed(f"cannot start {digest}: the app user {user.name} may not enter {blocked}")
        return user

    def stop(self, service: str, slot: str, pid: int, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; reaps the process if it is our child."""
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while self.is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.is_alive(pid):
            os.kill(pid, signal.SIGKILL)
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait(timeout=timeout)

    def is_alive(self, pid: int) -> bool:
        """The process exists and is not a zombie."""
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    def command_line(self, pid: int) -> list[str]:
        """The process's argv, from /proc."""
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return []

    async def verify(self, target: Target, slot: str, pid: int, port: int,
                     timeout: float = 15.0) -> dict[str, str]:
        """Check the process, the digest of the file it runs, /health and /version."""
        checks, digest = {}, target.digest

        async def alive() -> bool:
            return self.is_alive(pid)

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
            checks["health"] = await wait_healthy(client, alive, timeout)
            checks["version"] = await check_version(client, target.version)
        # Checked once the app answers: while `env` execs the interpreter, /proc/<pid>/cmdline can be empty.
        checks["process"] = "passed" if self.is_alive(pid) else f"exited with code {self._exit_code(pid)}"
        path = str(self.artifact_path(digest))
        if path not in self.command_line(pid):
            checks["digest"] = f"process {pid} does not run {path}"
        else:
            actual = await asyncio.to_thread(file_digest, Path(path))
            checks["digest"] = "passed" if actual == digest else f"the running file has {actual}"
        return checks

    def _exit_code(self, pid: int) -> int | None:
        child = self._children.get(pid)
        return child.poll() if child is not None else None

    def evict(self, service: str, slot: str, port: int) -> list[str]:
        """Nothing: a process the deployer did not start is not ours to signal (a restore onto its port fails)."""
        return []

    async def survey(self) -> None:
        """Nothing to list: each slot has its run file."""
        return None

    async def observe(self, expected: Expected, http: httpx.AsyncClient, listing: None = None) -> Observed:
        """The slot's process (from its run file): alive, the digest of the file it runs, its environment and what
        its /version answers; when it does not run, what answers on the slot's port instead."""
        running = self.launched(expected.service, expected.slot)
        if running is None:
            return Observed(port_version=(await answered_version(http, expected.port))[0])
        name = f"process {running.pid}"
        if not running.alive:
            return Observed((Instance(name, "not running"),),
                            port_version=(await answered_version(http, expected.port))[0])
        path = self.artifact_path(running.digest)
        digest = await asyncio.to_thread(self._digest_of, path)
        version, error = await answered_version(http, expected.port)
        variables = self.environment_of(running.pid, set(expected.variables))
        return Observed((Instance(name, "running", digest=digest, variables=variables, version=version,
                                  version_error=error),))

    def _digest_of(self, path: Path) -> str | None:
        """The file's sha256 (None if it is gone), hashed again only when its inode, size or times changed."""
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if key not in self._digests:
            if len(self._digests) > 1024:
                self._digests.clear()
            self._digests[key] = file_digest(path)
        return self._digests[key]

    @staticmethod
    def environment_of(pid: int, keys: set[str]) -> dict[str, str] | None:
        """The process's environment as it was started, only `keys` (never the rest: it holds resolved secrets);
        None if it cannot be read."""
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()[:1_048_576]
        except OSError:
            return None
        found = {}
        for item in raw.split(b"\0"):
            key, _, value = item.decode(errors="replace").partition("=")
            if key in keys:
                found[key] = value
        return found


VERSION_ANSWER_BYTES = 64 * 1024
"""The most of a /version answer a drift check reads (whatever answers on a port may not be ours)."""


async def answered_version(http: httpx.AsyncClient, port: int, timeout: float = 2.0) -> tuple[str | None, str | None]:
    """(the `version` GET /version answers on a loopback port, why there is none); at most VERSION_ANSWER_BYTES
    are read. One client serves a round of checks (making one costs ~30 ms of CPU: its TLS context)."""
    body = b""
    try:
        async with http.stream("GET", f"http://127.0.0.1:{port}/version", timeout=timeout) as response:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > VERSION_ANSWER_BYTES:
                    return None, f"answered more than {VERSION_ANSWER_BYTES} bytes"
        answered = json.loads(body).get("version")
    except (httpx.HTTPError, ValueError, AttributeError) as error:
        return None, f"failed: {type(error).__name__}"
    if not isinstance(answered, str):
        return None, f"answered {response.status_code} without a version"
    return answered[:200], None


async def wait_healthy(client: httpx.AsyncClient, alive: Callable[[], Awaitable[bool]], timeout: float) -> str:
    """"passed" once GET /health answers 200 within `timeout`; else what it answered (five non-200 answers
    end the wait) or that the app exited (`alive` says whether it still runs)."""
    deadline, unhealthy, last = time.monotonic() + timeout, 0, "no answer"
    while time.monotonic() < deadline and await alive():
        try:
            response = await client.get("/health")
        except httpx.TransportError:
            await asyncio.sleep(0.05)
            continue
        if response.status_code == 200:
            return "passed"
        unhealthy, last = unhealthy + 1, f"GET /health answered {response.status_code}"
        if unhealthy >= 5:
            return last
        await asyncio.sleep(0.1)
    return last if await alive() else "process exited"


async def check_version(client: httpx.AsyncClient, version: str) -> str:
    """"passed" if GET /version answers {"version": version}; else what it answered."""
    try:
        response = await client.get("/version")
        answered = response.json().get("version")
    except (httpx.HTTPError, ValueError, AttributeError) as error:
        return f"GET /version failed: {type(error).__name__}"
    return "passed" if answered == version else f"answered version {answered!r}, expected {version!r}"
