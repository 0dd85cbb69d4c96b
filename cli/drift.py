"""`promote drift [SERVICE]`: have the deployer compare what runs with what it promoted, now, and show it.

Exit 0 when every environment checked runs what was promoted there, DRIFTED_EXIT when one does not, 1 on an
error (no answer from the deployer within --wait among them).
"""

import json
from typing import Annotated

import typer

from cli import api
from cli.errors import CliError

DRIFTED_EXIT = 3
"""The exit status when something drifted (1 stays an error, as for every command)."""
SHORT = 15


def drift(service: Annotated[str | None, typer.Argument(help="Service; every service that runs a release if "
                                                              "omitted.")] = None,
          env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
          wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the deployer's answer.")] = 15.0,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """Compare what runs in each environment with what was promoted there, now (exit 3 if something drifted)."""
    if env is not None and service is None:
        raise CliError("--env needs a SERVICE")
    answer = api.call("POST", "/v1/drift-checks", json={"service": service, "env": env, "wait": wait},
                      timeout=wait + 15)
    silent = [one["service"] for one in answer["services"] if one["environments"] is None]
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        _show(answer["services"])
    if silent:
        raise CliError(f"the deployer did not answer within {wait:g} s for {', '.join(silent[:5])}"
                       + (f" and {len(silent) - 5} more" if len(silent) > 5 else ""))
    if any(found["state"] == "drifted" for one in answer["services"] for found in one["environments"].values()):
        raise typer.Exit(DRIFTED_EXIT)


def _show(services: list[dict]) -> None:
    if not services:
        print("no service runs a release")
    for one in services:
        print(one["service"])
        if not one["environments"]:
            print("  nothing promoted since drift checks began" if one["environments"] == {} else "  no answer")
            continue
        width = max(len(name) for name in one["environments"])
        for name, found in one["environments"].items():
            release = f"{found['version']} ({found['digest'][:SHORT]}…)" if found.get("digest") else ""
            state = {"in-sync": "in sync", "drifted": "DRIFTED"}.get(found["state"], "not checked")
            reason = f": {found['reason']}" if found.get("reason") else ""
            print(f"  {name:<{width}}  {state}{reason}  {release}".rstrip())
            for line in found["differences"]:
                print(f"      {line}")
