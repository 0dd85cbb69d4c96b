"""Process plumbing for the local stack: state paths, pid files, detached spawns, stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from shared.platform.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


class StackError(RuntimeError):
    """A component failed to start or stop; the message is one printable line (plus log tail)."""


def var_dir() -> Path:
    """The state dir (var/, or PROMOTE_VAR_DIR)."""
    return Path(Settings().var_dir).resolve()


def run_dir() -> Path:
    """Where pid files live (var/run)."""
    return var_dir() / "run"


def log_path(component: str) -> Path:
    """var/log/<component>.log."""
    return var_dir() / "log" / f"{component}.log"


def pid_path(component: str) -> Path:
    """var/run/<component>.pid."""
    return run_dir() / f"{component}.pid"


def ensure_dirs() -> None:
    """Create var/, var/log, var/run and the drop directory intake takes artifacts from (var/drop)."""
    for d in (var_dir(), var_dir() / "log", run_dir(), Settings().drop_dir):
        d.mkdir(parents=True, exist_ok=True)


def say(msg: str) -> None:
    """Print one progress line right away."""
    print(msg, flush=True)


def is_alive(pid: int) -> bool:
    """True if pid runs and is not a zombie (our own dead children are reaped)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    """The process's command line joined by spaces ('' if gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read_pid(component: str, marker: str | None = None) -> int | None:
    """The live pid recorded for component (None if absent, dead, or reused by another program)."""
    try:
        pid = int(pid_path(component).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not is_alive(pid) or (marker and marker not in cmdline(pid)):
        return None
    return pid


def write_pid(component: str, pid: int) -> None:
    """Record pid for component."""
    run_dir().mkdir(parents=True, exist_ok=True)
    pid_path(component).write_text(f"{pid}\n")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def spawn(component: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> int:
    """Start argv detached (own session), output appended to var/log/<component>.log; returns pid."""
    ensure_dirs()
    with open(log_path(component), "ab") as log:
        log.write(f"\n=== {time.strftime('%F %T')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    write_pid(component, proc.pid)
    return proc.pid


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to timeout seconds for pid to exit; True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.1)
    return not is_alive(pid)


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 30.0, group: bool = False) -> None:
    """Send sig to pid (or its process group), wait, and SIGKILL it if it outlives timeout."""
    def send(s: int) -> None:
        try:
            if group and os.getpgid(pid) == pid:
                os.killpg(pid, s)
            else:
                os.kill(pid, s)
        except ProcessLookupError:
            pass

    send(sig)
    if not wait_exit(pid, timeout) and sig != signal.SIGKILL:
        send(signal.SIGKILL)
        wait_exit(pid, 5.0)


def stop_component(component: str, marker: str, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int | None:
    """Stop the process behind var/run/<component>.pid (if ours and alive) and drop the pid file."""
    pid = read_pid(component, marker)
    if pid is not None:
        stop_pid(pid, sig, timeout)
    pid_path(component).unlink(missing_ok=True)
    return pid


def log_tail(component: str, lines: int = 25) -> str:
    """The last lines of var/log/<component>.log, indented, for error messages."""
    try:
        text = log_path(component).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text)


def wait_until_ready(component: str, pid: int, ready, t0: float, timeout: float, where: str,
                     interval: float = 0.1) -> None:
    """Poll `ready()` until it is true; StackError with the log tail if `pid` exits first or `timeout` s since
    `t0` pass (`where`: what did not answer, for the message)."""
    while not ready():
        if not is_alive(pid):
            raise fail(component, f"pid {pid} exited during startup")
        if time.monotonic() - t0 > timeout:
            raise fail(component, f"{where} did not answer within {timeout:.0f} s")
        time.sleep(interval)


def fail(component: str, what: str) -> StackError:
    """A StackError carrying a one-line reason and the component's log tail."""
    return StackError(f"{component}: {what} (log: {log_path(component)})\n{log_tail(component)}")


def apt_install(component: str, packages: tuple[str, ...], installed: Path) -> Path:
    """`installed` (a binary), installed with apt-get from the first of `packages` that provides it when we
    are root; StackError naming the command to run otherwise."""
    if installed.exists():
        return installed
    if os.geteuid() != 0:
        raise StackError(f"{component}: {installed} not found; run: sudo apt-get install -y {packages[0]}")
    say(f"{component}: installing {packages[0]} with apt-get…")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
    error = ""
    for package in packages:
        res = subprocess.run(["apt-get", "install", "-y", "-q", package], env=env,
                             capture_output=True, text=True)
        if res.returncode == 0 and installed.exists():
            return installed
        error = res.stderr[-2000:]
    raise StackError(f"{component}: apt-get install {' '.join(packages)} failed\n{error}")
