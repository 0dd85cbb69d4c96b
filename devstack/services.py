"""The promote service processes (python -m services.<name>) and the apps the deployer launched."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from devstack import access, postgres, registry
from devstack import processes as p
from shared.platform.settings import Settings

SERVICES: tuple[str, ...] = ("intake", "gates", "deployer", "rollback", "ledger", "notifier")
"""The event-driven services (each a consumer group)."""
API = "api"
COMPONENTS: tuple[str, ...] = (*SERVICES, API)
"""Every process the stack runs: the services and the operator API (which serves /health on its own port)."""
CREDENTIAL_FIELDS = frozenset({"kafka_username", "kafka_password", "event_id_key", "database_url",
                               "registry_username", "registry_password", "ledger_signing_key"})
"""Settings that name or hold a principal's secret: each process gets its own, never the parent's."""


def health_ports() -> dict[str, int]:
    """{component: health port}: Settings().health_port_base + index in SERVICES; the API's own port."""
    settings = Settings()
    ports = {name: settings.health_port_base + i for i, name in enumerate(SERVICES)}
    return ports | {API: urlsplit(settings.api_url).port or 80}


def health_port(name: str, instance: int = 1) -> int:
    """A service instance's health port: instance N listens 10 × (N - 1) above the first."""
    return health_ports()[name] + 10 * (instance - 1)


def python() -> str:
    """The venv interpreter if the repo has one, else the current one."""
    venv = p.REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _marker(name: str) -> str:
    return f"services.{name}"


def _component(name: str, instance: int) -> str:
    """The pid-file and log name of a service instance: `gates`, `gates-2`, …"""
    return name if instance == 1 else f"{name}-{instance}"


def service_pid(name: str, instance: int = 1) -> int | None:
    """Pid of a service instance we started, if alive."""
    return p.read_pid(_component(name, instance), _marker(name))


def healthy(name: str, timeout: float = 0.5, instance: int = 1) -> bool:
    """True if GET http://127.0.0.1:<port>/health answers 200."""
    url = f"http://127.0.0.1:{health_port(name, instance)}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _env_value(value: object) -> str:
    """A setting as its PROMOTE_* variable spells it: paths (artifact roots) colon-separated, as PATH; other
    lists and mappings as JSON (how pydantic-settings reads them)."""
    if isinstance(value, list) and all(isinstance(item, Path) for item in value):
        return ":".join(str(item) for item in value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def service_env(name: str, instance: int = 1) -> dict[str, str]:
    """Inherited env plus every PROMOTE_* setting, this instance's number and health port, and the service's
    own credentials (no other principal's: a parent's PROMOTE_KAFKA_* are replaced)."""
    s = Settings()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PROMOTE_KAFKA_", "PROMOTE_REGISTRY_USERNAME", "PROMOTE_REGISTRY_PASSWORD",
                                  "PROMOTE_LEDGER_SIGNING_KEY"))}
    env.update({f"PROMOTE_{field.upper()}": _env_value(getattr(s, field)) for field in type(s).model_fields
                if getattr(s, field) is not None and field not in CREDENTIAL_FIELDS})
    env.update({"PROMOTE_VAR_DIR": str(p.var_dir()), "PROMOTE_HEALTH_PORT": str(health_port(name, instance)),
                "PROMOTE_INSTANCE": str(instance), "PYTHONUNBUFFERED": "1",
                "PROMOTE_KAFKA_USERNAME": name, "PROMOTE_KAFKA_PASSWORD": access.ensure_secret("kafka", name),
                "PROMOTE_EVENT_ID_KEY": access.ensure_secret("ids", name, 32),
                "PROMOTE_DATABASE_URL": service_database_url(name)})
    if name == API:
        env["PROMOTE_API_BOOTSTRAP_TOKEN_FILE"] = str(admin_token_file())
    if name == "ledger":  # the key of its signed checkpoints: the ledger's alone
        env["PROMOTE_LEDGER_SIGNING_KEY"] = access.ensure_signing_key("ledger")
    if name in registry.USERS:
        env["PROMOTE_REGISTRY_USERNAME"], env["PROMOTE_REGISTRY_PASSWORD"] = registry.credentials(name)
    return env


def admin_token_file() -> Path:
    """The local stack's first admin API token (the API writes it once; 0600, root's)."""
    return Settings().credentials_dir / "api" / "admin.token"


def service_database_url(name: str) -> str:
    """The service's own database login (its role owns its schema only)."""
    port, _, db = postgres.dsn_parts()
    return f"postgresql://{name}:{access.ensure_secret('postgres', name)}@127.0.0.1:{port}/{db}"


def start_service(name: str, instance: int = 1) -> int:
    """Start services.<name> (instance N) detached (no-op if it already runs); returns its pid."""
    if name not in COMPONENTS:
        raise ValueError(f"unknown service {name!r}; expected one of {COMPONENTS}")
    component = _component(name, instance)
    pid = service_pid(name, instance)
    if pid is not None:
        p.say(f"{component}: already running (pid {pid})")
        return pid
    postgres.ensure_roles()  # its schema exists (a disaster drill may have dropped it) and is its own
    pid = p.spawn(component, [python(), "-m", _marker(name)], env=service_env(name, instance))
    p.say(f"{component}: started pid {pid} (health :{health_port(name, instance)})")
    return pid


def stop_service(name: str, sig: int = signal.SIGTERM, timeout: float = 20.0, instance: int = 1) -> int | None:
    """Signal the service instance (SIGKILL to simulate a crash) and wait for it to exit; returns the pid."""
    component = _component(name, instance)
    pid = p.stop_component(component, _marker(name), timeout=timeout, sig=sig)
    if pid is not None:
        p.say(f"{component}: stopped pid {pid} ({signal.Signals(sig).name})")
    return pid


def wait_services_ready(timeout: float = 60.0, names: tuple[str, ...] | list[str] = COMPONENTS,
                        instance: int = 1) -> None:
    """Wait until every named service (that instance) answers /health with 200; raise with its log tail otherwise."""
    t0 = time.monotonic()
    pending = list(names)
    while pending:
        for name in list(pending):
            if service_pid(name, instance) is None:
                raise p.fail(_component(name, instance), "process is not running")
            if healthy(name, instance=instance):
                pending.remove(name)
        if pending and time.monotonic() - t0 > timeout:
            raise p.fail(_component(pending[0], instance),
                         f"/health not 200 on :{health_port(pending[0], instance)} after {timeout:.0f} s")
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
    """Stop every service instance we started (and the API), in reverse start order."""
    for name in reversed(COMPONENTS):
        for instance in (2, 1):
            stop_service(name, instance=instance)
