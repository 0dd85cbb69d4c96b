"""The router in front of an environment's two slots: nginx config fragments, graceful reloads, access logs.

One fragment per environment, <root>/conf.d/<service>--<env>.conf: a weighted upstream of the
slots' loopback ports and a server on the environment's own port. A weight change is a graceful
reload (SIGHUP): nginx starts workers with the new weights on the same listening sockets and lets
the old ones finish their requests, so no request is dropped. nginx's weighted round robin is
smooth and deterministic: weights 5/95 give the canary exactly 1 request in 20 (per reload).

Client connections are not kept alive (keepalive_timeout 0): on a reload the old worker closes
its idle keep-alive connections, and a request a client sends on one at that moment is lost
(about 1 in 800 requests under a reload every 0.2 s in our test). A fresh connection per request
waits in the listening socket's queue, which the old and new workers share, so none is lost.

Blocking code: the deployer calls it through asyncio.to_thread.
"""

import fcntl
import hashlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.contracts.limits import MAX_REPLICAS

NGINX = "/usr/sbin/nginx"
RELOAD_TIMEOUT = 5.0
NOT_RUNNING = "router: nginx is not running (start the stack: ./dev-stack up)"
_GENERATION = re.compile(r"^# generation (\d+)$", re.M)
_LISTEN = re.compile(r"^    listen 127\.0\.0\.1:(\d+);$", re.M)


class RouterError(Exception):
    """nginx refused a config, did not take it, or does not run; the message is one line."""


MAX_WEIGHT = 100 * MAX_REPLICAS
"""A server's largest weight: a share of 100 times the replicas of the other lane (see `spread`)."""


@dataclass(frozen=True)
class Backend:
    """One server behind the router: its loopback port and its weight (0: none of the traffic)."""

    port: int
    weight: int


def spread(live: tuple[list[int], int] | None, canary: tuple[list[int], int] | None) -> list[Backend]:
    """Backends giving each lane (its servers' ports, its share of 100) exactly its share of the traffic.

    nginx weighs servers, not lanes: each server of a lane gets the lane's share times the other lane's
    number of servers, so 3 live and 2 canary servers at 90/10 are weighted 180 each and 30 each
    (540:60 = 90:10). With one server each, the weights are the shares.
    """
    lanes = [lane for lane in (live, canary) if lane is not None]
    backends = []
    for index, (ports, share) in enumerate(lanes):
        others = len(lanes[1 - index][0]) if len(lanes) == 2 else 1
        backends += [Backend(port, share * others) for port in ports]
    return backends


def upstream_name(service: str, env: str) -> str:
    """The nginx upstream of an environment: readable, [a-z0-9_], and distinct for distinct (service, env)."""
    def clean(text: str) -> str:
        return re.sub(r"[^a-z0-9_]", "_", text.lower())

    digest = hashlib.sha256(f"{service}--{env}".encode()).hexdigest()[:8]
    return f"{clean(service)}__{clean(env)}_{digest}"


def _server_line(backend: Backend) -> str:
    if not 0 < backend.port < 65536:
        raise ValueError(f"backend port {backend.port} is not a TCP port")
    if not 0 <= backend.weight <= MAX_WEIGHT:
        raise ValueError(f"weight {backend.weight} of port {backend.port} is not within 0..{MAX_WEIGHT}")
    share = f"weight={backend.weight}" if backend.weight else "down"
    # max_fails=0: a failed request must not bench the server for 10 s, which would skew the weights
    return f"    server 127.0.0.1:{backend.port} {share} max_fails=0;\n"


def render_server(service: str, env: str, listen_port: int, backends: list[Backend], generation: int,
                  access_log: Path) -> str:
    """The nginx fragment routing 127.0.0.1:listen_port to the backends by weight (a `down` one gets nothing)."""
    if not any(backend.weight > 0 for backend in backends):
        raise ValueError(f"{service} in {env}: at least one backend needs a weight above 0")
    if not 0 < listen_port < 65536:
        raise ValueError(f"{service} in {env}: listen port {listen_port} is not a TCP port")
    upstream = upstream_name(service, env)
    return (
        f"# {service} in {env}, written by services/deployer/router.py\n"
        f"# generation {generation}\n"
        f"upstream {upstream} {{\n"
        + "".join(_server_line(backend) for backend in backends)
        + "    keepalive 16;\n"
        "}\n"
        "server {\n"
        f"    listen 127.0.0.1:{listen_port};\n"
        "    keepalive_timeout 0;\n"  # see the module docstring
        f"    access_log \"{access_log}\" promote_json;\n"
        "    location = /_router/generation {\n"
        f"        return 200 \"{generation}\\n\";\n"
        "        access_log off;\n"
        "    }\n"
        "    location / {\n"
        f"        proxy_pass http://{upstream};\n"
        "        proxy_next_upstream error timeout http_502 non_idempotent;\n"
        "        proxy_connect_timeout 1s;\n"
        "        proxy_http_version 1.1;\n"
        "        proxy_set_header Connection \"\";\n"
        "        proxy_set_header Host $host;\n"
        "    }\n"
        "}\n"
    )


def generation_of(fragment: str) -> int:
    """The generation a fragment was rendered with (0 for none)."""
    found = _GENERATION.search(fragment)
    return int(found.group(1)) if found else 0


def listen_port_of(fragment: str) -> int | None:
    """The port a fragment listens on."""
    found = _LISTEN.search(fragment)
    return int(found.group(1)) if found else None


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")  # not *.conf: nginx's include never sees it
    temporary.write_text(text)
    temporary.replace(path)


def accepting_workers(master: int) -> set[int]:
    """Pids of the master's workers that accept connections (not "worker process is shutting down")."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            title = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        if parent == master and title.startswith(b"nginx: worker process") and b"shutting down" not in title:
            found.add(int(stat.parent.name))
    return found


def port_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port (nginx would retry a taken port for 2.5 s, then give up)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx does: TIME_WAIT is no obstacle
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def nginx_argv(root: Path, *extra: str) -> list[str]:
    """The nginx command line for the router in `root` (startup errors go to its error log too)."""
    return [NGINX, "-p", f"{root}/", "-c", str(root / "nginx.conf"), "-e", str(root / "logs" / "error.log"), *extra]


def master_pid(root: Path) -> int | None:
    """The pid in <root>/nginx.pid if it runs, is not a zombie, and is the nginx master of this root
    (not a program that reused the pid, nor another router's master)."""
    try:
        pid = int((root / "nginx.pid").read_text().split()[0])
        stat = Path(f"/proc/{pid}/stat").read_text()
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError, IndexError):
        return None
    alive = stat.rsplit(")", 1)[1].split()[0] != "Z"
    return pid if alive and title.startswith(b"nginx: master process") and f"{root}/".encode() in title else None


class Router:
    """The nginx router whose prefix directory is `root` (var/router): publishes, removes, reports."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.error_log = self.root / "logs" / "error.log"

    def fragment(self, service: str, env: str) -> Path:
        """<root>/conf.d/<service>--<env>.conf."""
        return self.root / "conf.d" / f"{service}--{env}.conf"

    def access_log(self, service: str, env: str) -> Path:
        """<root>/logs/<service>--<env>.access.log (JSON lines, see services/deployer/analysis.py)."""
        return self.root / "logs" / f"{service}--{env}.access.log"

    def master_pid(self) -> int | None:
        """The nginx master's pid if it runs."""
        return master_pid(self.root)

    def running(self) -> bool:
        """True if the nginx master runs."""
        return self.master_pid() is not None

    def generation(self, service: str, env: str) -> int:
        """The generation of the environment's fragment on disk (0 if it has none)."""
        try:
            return generation_of(self.fragment(service, env).read_text())
        except FileNotFoundError:
            return 0

    def publish(self, service: str, env: str, listen_port: int, backends: list[Backend]) -> int:
        """Route listen_port to `backends`: write, check (nginx -t), reload, wait until it answers; the generation.
        The same routing again changes nothing (no reload: the keep-alive connections clients hold stay open).

        On any failure the previous fragment is back in place and in effect, and RouterError says why.
        """
        with self._lock():
            pid = self._require_running()
            path = self.fragment(service, env)
            previous = path.read_text() if path.exists() else None
            if listen_port != listen_port_of(previous or "") and not port_free(listen_port):
                raise RouterError(f"router: port {listen_port} for {service} in {env} is already in use")
            if previous is not None and previous == render_server(
                    service, env, listen_port, backends, generation_of(previous), self.access_log(service, env)):
                return generation_of(previous)  # already in effect: no reload (a republish after a rebuild)
            generation = generation_of(previous or "") + 1
            _write_atomically(path, render_server(service, env, listen_port, backends, generation,
                                                  self.access_log(service, env)))
            try:
                self._check()
            except RouterError:
                self._restore(path, previous)
                raise
            try:
                self._reload(pid, lambda client: self._answers(client, listen_port, generation))
            except RouterError as error:
                self._restore(path, previous)
                try:
                    self._reload(pid)  # whether or not nginx took the new fragment, the previous one is in effect
                except RouterError as again:
                    raise RouterError(f"{error}; restoring the previous config failed too: {again}") from None
                raise
            return generation

    def remove(self, service: str, env: str) -> None:
        """Stop routing the environment (its port closes with a graceful reload); no-op if it has no fragment."""
        with self._lock():
            path = self.fragment(service, env)
            if not path.exists():
                return
            path.unlink()
            pid = self.master_pid()
            if pid is not None:
                self._reload(pid)

    def _require_running(self) -> int:
        pid = self.master_pid()
        if pid is None:
            raise RouterError(NOT_RUNNING)
        return pid

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """An exclusive lock on <root>/router.lock: one change at a time, across threads and processes."""
        with open(self.root / "router.lock", "a") as file:
            fcntl.flock(file, fcntl.LOCK_EX)  # released when the file is closed
            yield

    def _check(self) -> None:
        """nginx -t on the whole config; a warning about a port two servers share counts as a refusal."""
        result = subprocess.run(nginx_argv(self.root, "-t", "-q"), capture_output=True, text=True)
        problems = [line.removeprefix("nginx: ") for line in result.stderr.splitlines()
                    if "[emerg]" in line or "conflicting server name" in line]
        if result.returncode != 0 or problems:
            raise RouterError(f"router: nginx refused the config: {(problems or [result.stderr.strip()])[0]}")

    def _reload(self, master: int, answers: Callable[[httpx.Client], bool] = lambda client: True) -> None:
        """SIGHUP, then wait until the workers that accepted before stopped accepting and `answers` holds.

        The new workers answering is not enough: for a moment after the reload the old worker still
        accepts connections (with the old weights), until it handles the master's QUIT. A reload
        nginx cannot apply keeps the old workers and leaves an [emerg] line in the error log.
        """
        old_workers, log_offset = accepting_workers(master), self._error_log_size()
        os.kill(master, signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        with httpx.Client(timeout=1.0, headers={"Connection": "close"}, trust_env=False) as client:
            while time.monotonic() < deadline:
                if not old_workers & accepting_workers(master) and answers(client):
                    return
                time.sleep(0.01)
        raise RouterError(f"router: nginx did not take the new config within {RELOAD_TIMEOUT:.0f} s: "
                          f"{self._first_emerg(log_offset) or 'no error logged'}")

    @staticmethod
    def _answers(client: httpx.Client, port: int, generation: int) -> bool:
        """True if the router's server on `port` answers `generation`."""
        try:
            response = client.get(f"http://127.0.0.1:{port}/_router/generation")
        except httpx.TransportError:
            return False
        return response.status_code == 200 and response.text.strip() == str(generation)

    def _error_log_size(self) -> int:
        try:
            return self.error_log.stat().st_size
        except FileNotFoundError:
            return 0

    def _first_emerg(self, offset: int) -> str | None:
        """The first [emerg] line nginx logged past `offset` (from "[emerg]" on), if any."""
        try:
            with open(self.error_log, "rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return None
        lines = [line for line in text.splitlines() if "[emerg]" in line]
        return lines[0][lines[0].index("[emerg]"):] if lines else None

    @staticmethod
    def _restore(path: Path, previous: str | None) -> None:
        """Put the previous fragment back (or none, if there was none)."""
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomically(path, previous)
