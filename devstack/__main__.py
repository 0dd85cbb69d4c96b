"""CLI: python -m devstack up [--no-services] | down | status [--json] | fetch | keycloak | rebuild SERVICE |
podman ARGS."""

from __future__ import annotations

import argparse
import json
import os
import sys

import devstack
from devstack import containers, kafka, keycloak


def print_status(st: dict) -> None:
    """One line per component: kafka, postgres, each service, each deployed app."""
    def line(name: str, info: dict, extra: str = "") -> None:
        state = "running" if info["running"] else "stopped"
        pid = f"pid {info['pid']}" if info.get("pid") else ("external" if info.get("external") else "")
        print(f"{name:<12} {state:<9} {pid:<11} {extra}".rstrip())

    line("kafka", st["kafka"], f"127.0.0.1:{st['kafka']['port']}")
    line("postgres", st["postgres"], f"127.0.0.1:{st['postgres']['port']}")
    line("registry", st["registry"], f"127.0.0.1:{st['registry']['port']}")
    line("podman", st["podman"], st["podman"]["socket"])
    line("router", st["router"], "nginx")
    for name, info in st["services"].items():
        health = "healthy" if info["healthy"] else ("unhealthy" if info["running"] else "")
        line(name, info, f"health :{info['port']} {health}")
    stopped = 0
    for name, info in st["apps"].items():
        if info["running"]:
            line(f"app {name}", info)
        else:
            stopped += 1
    if stopped:
        print(f"({stopped} app record(s) of stopped apps in var/run/apps; --json lists them)")


def main(argv: list[str] | None = None) -> int:
    """Parse argv and run the sub-command; exit code 1 on a stack error."""
    ap = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start kafka, postgres, the registry, the router (+ services), create topics")
    up.add_argument("--no-services", action="store_true", help="only kafka, postgres, the registry, the router "
                                                                "and topics")
    sub.add_parser("down", help="stop apps, services, the router, the registry, kafka, postgres")
    st = sub.add_parser("status", help="what runs")
    st.add_argument("--json", action="store_true")
    sub.add_parser("fetch", help=f"only fetch the Kafka {kafka.KAFKA_VERSION} jars")
    sub.add_parser("keycloak", help=f"start Keycloak (OIDC on 127.0.0.1:{keycloak.PORT}) with the realm "
                                    f"{keycloak.REALM!r}; prints its issuer")
    drill = sub.add_parser("rebuild", help="disaster drill: stop a service, drop its schema, start it again: it "
                                           "rebuilds its state from the topics")
    drill.add_argument("service", choices=devstack.REBUILDABLE)
    engine = sub.add_parser("podman", help="podman against the stack's storage and configuration, e.g. "
                                           "`podman ps --filter label=promote.service=payments`")
    engine.add_argument("args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.cmd == "podman":
        os.execve(str(containers.PODMAN), [str(containers.PODMAN), *args.args], {**os.environ,
                                                                              **containers.environment()})
    try:
        if args.cmd == "up":
            devstack.up(services=not args.no_services)
        elif args.cmd == "down":
            devstack.down()
        elif args.cmd == "fetch":
            print(f"kafka: jars in {kafka.fetch()}")
        elif args.cmd == "rebuild":
            print(f"{args.service}: rebuilt from the topics and ready in {devstack.rebuild(args.service):.1f} s")
        elif args.cmd == "keycloak":
            print(f"keycloak: issuer {keycloak.up()}")
        elif args.json:
            print(json.dumps(devstack.status(), indent=2))
        else:
            print_status(devstack.status())
    except devstack.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
