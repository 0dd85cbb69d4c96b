"""Local stack without Docker: Kafka (KRaft) + PostgreSQL + nginx (the router) + the promote services, as plain
processes.

State lives in Settings().var_dir (var/): logs in var/log/<component>.log, pid files in
var/run/<component>.pid. `up` is idempotent and `down` stops only what `up` started.
"""

from __future__ import annotations

import time

from devstack import console, containers, kafka, keycloak, postgres, prometheus, registry, router, topics, users
from devstack import processes as p
from devstack.processes import StackError
from devstack.services import (
    API,
    admin_token_file,
    COMPONENTS,
    SERVICES,
    apps,
    health_ports,
    healthy,
    service_pid,
    start_service,
    stop_apps,
    stop_service,
    stop_services,
    wait_services_ready,
)

SERVICE_HEALTH_PORTS: dict[str, int] = health_ports()

__all__ = [
    "API", "COMPONENTS", "admin_token_file", "SERVICES", "SERVICE_HEALTH_PORTS", "StackError", "down", "start_service", "status",
    "stop_service", "up", "wait_services_ready",
]


REBUILDABLE = ("intake", "gates", "deployer", "rollback")
"""The services that rebuild a lost schema from the topics at their start (the ledger's projections: promote replay
--rebuild; its entries are the audit history itself)."""


def rebuild(service: str) -> float:
    """The disaster drill on the running stack: stop the service, drop its schema, start it, and wait until it
    answers again, its state rebuilt from the topics (docs/reliability.md); the seconds it took."""
    if service not in REBUILDABLE:
        hint = " (the ledger: promote replay --rebuild)" if service == "ledger" else ""
        raise StackError(f"cannot rebuild {service!r}: one of {', '.join(REBUILDABLE)}{hint}")
    started = time.monotonic()
    stop_service(service)
    postgres.drop_schema(service)
    p.say(f"{service}: schema dropped; starting it to rebuild from the topics")
    start_service(service)
    wait_services_ready(300, names=[service])
    return time.monotonic() - started


def up(services: bool = True, ready_timeout: float = 90.0) -> None:
    """Start PostgreSQL, Kafka, the registry, podman's API service, the router (nginx) and Prometheus, create topics,
    then (optionally) start the services and wait for /health."""
    t0 = time.monotonic()
    p.ensure_dirs()
    users.ensure_app_user()
    kstart = time.monotonic()
    kpid = kafka.start()  # the JVM boots while PostgreSQL starts
    postgres.up()
    if kpid is not None:
        kafka.wait_ready(kpid, kstart)
    kafka.sync_access()
    topics.ensure_topics()
    registry.up()
    containers.up()
    router.up()
    prometheus.up()
    console.assets()
    if services:
        for name in COMPONENTS:
            start_service(name)
        wait_services_ready(ready_timeout)
    p.say(f"stack: up ({time.monotonic() - t0:.1f} s)")


def down() -> None:
    """Stop deployed apps, services, the apps' containers, the router, Prometheus, podman's API service, the registry,
    Keycloak, Kafka, then PostgreSQL (only what this stack started)."""
    t0 = time.monotonic()
    stop_apps()
    stop_services()
    containers.stop_apps()  # after the deployer stopped: nothing starts one again
    router.stop()
    prometheus.stop()
    containers.stop()
    registry.stop()
    keycloak.stop()
    kafka.stop()
    postgres.stop()
    p.say(f"stack: down ({time.monotonic() - t0:.1f} s)")


def _entry(pid: int | None, port: int) -> dict:
    running = pid is not None or p.port_open(port)
    return {"running": running, "pid": pid, "port": port, "external": running and pid is None}


def status() -> dict:
    """{"kafka": {...}, "postgres": {...}, "services": {name: {...}}, "apps": {name: {...}}}."""
    result = {
        "var_dir": str(p.var_dir()),
        "kafka": _entry(kafka.running_pid(), kafka.PORT),
        "postgres": _entry(postgres.running_pid(), postgres.dsn_parts()[0]),
        "registry": _entry(registry.running_pid(), registry.address()[1]),
        "podman": {"running": containers.running_pid() is not None, "pid": containers.running_pid(),
                   "socket": str(containers.socket_path())},
        "router": {"running": router.running_pid() is not None, "pid": router.running_pid(),
                   "config": str(router.router_dir() / "nginx.conf")},
        "prometheus": _entry(prometheus.running_pid(), prometheus.address()[1]),
        "services": {},
        "apps": apps(),
    }
    for name in COMPONENTS:
        pid = service_pid(name)
        result["services"][name] = {
            "running": pid is not None, "pid": pid, "port": SERVICE_HEALTH_PORTS[name],
            "healthy": pid is not None and healthy(name),
        }
    return result
