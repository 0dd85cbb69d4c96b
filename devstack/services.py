"""The promote service processes (python -m services.<name>) and the apps the deployer launched."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

from devstack import processes as p
from shared.settings import Settings

SERVICES: tuple[str, ...] = ("intake", "gates", "deployer", "rollback", "ledger")


def health_ports() -> dict[str, int]:
    """{service: health port}: Settings().health_port_base + index in SERVICES."""
    base = Settings().health_port_base
    return {name: base + i for i, name in enumerate(SERVICES)}


def python() -> str:
    """The venv interpreter if the repo has one, else the current one."""
    venv = p.REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _marker(name: str) -> str:
    return f"services.{name}"


def service_pid(name: str) -> int | None:
    """Pid of a service we started, if alive."""
    return p.read_pid(name, _marker(name))


def healthy(name: str, timeout: float = 0.5) -> bool:
    """True if GET http://127.0.0.1:<port>/health answers 200."""
    url = f"http://127.0.0.1:{health_ports()[name]}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def service_env(name: str) -> dict[str, str]:
    """Inherited env plus every PROMOTE_* setting and this service's PROMOTE_HEALTH_PORT."""
    s = Settings()
    env = dict(os.environ)
    env.update({f"PROMOTE_{field.upper()}": str(getattr(s, field)) for field in type(s).model_fields})
    env.update({"PROMOTE_VAR_DIR": str(p.var_dir()), "PROMOTE_HEALTH_PORT": str(health_ports()[name]),
                "PYTHONUNBUFFERED": "1"})
    return env


def start_service(name: str) -> int:
    """Start services.<name> detached (no-op if it already runs); returns its pid."""
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; expected one of {SERVICES}")
    pid = service_pid(name)
    if pid is not None:
        p.say(f"{name}: already running (pid {pid})")
        return pid
    pid = p.spawn(name, [python(), "-m", _marker(name)], env=service_env(name))
    p.say(f"{name}: started pid {pid} (health :{health_ports()[name]})")
    return pid


def stop_service(name: str, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
    """Signal the service (SIGKILL to simulate a crash) and wait for it to exit; returns the pid."""
    pid = p.stop_component(name, _marker(name), timeout=timeout, sig=sig)
    if pid is not None:
        p.say(f"{name}: stopped pid {pid} ({signal.Signals(sig).name})")
    return pid


def wait_services_ready(timeout: float = 60.0, names: tuple[str, ...] | list[str] = SERVICES) -> None:
    """Wait until every named service answers /health with 200; raise with its log tail otherwise."""
    t0 = time.monotonic()
    pending = list(names)
    while pending:
        for name in list(pending):
            pid = service_pid(name)
            if pid is None:
                raise p.fail(name, "process is not running")
            if healthy(name):
                pending.remove(name)
        if pending and time.monotonic() - t0 > timeout:
            raise p.fail(pending[0], f"/health not 200 on :{health_ports()[pending[0]]} after {timeout:.0f} s")
        if pending:
            time.sleep(0.2)
    p.say(f"services: {len(names)} healthy ({time.monotonic() - t0:.1f} s)")


def apps_dir() -> Path:
    """var/run/apps: one JSON file per deployed app process, written by the deployer."""
    return p.run_dir() / "apps"


def apps() -> dict[str, dict]:
    """{app file stem: {"pid": int|None, "running": bool}} for var/run/apps/*.json."""
    out = {}
    for f in sorted(apps_dir().glob("*.json")):
        try:
            pid = json.loads(f.read_text()).get("pid")
        except (OSError, ValueError, AttributeError):
            pid = None
        pid = pid if isinstance(pid, int) and pid > 0 else None
        out[f.stem] = {"pid": pid, "running": pid is not None and p.is_alive(pid)}
    return out


def stop_apps() -> None:
    """SIGTERM (process group if leader) every running deployed app; SIGKILL after 10 s."""
    for name, info in apps().items():
        if info["running"]:
            p.stop_pid(info["pid"], timeout=10.0, group=True)
            p.say(f"app {name}: stopped pid {info['pid']}")


def stop_services() -> None:
    """Stop every service we started, in reverse start order."""
    for name in reversed(SERVICES):
        stop_service(name)
