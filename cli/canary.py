"""`promote canary pause | resume | abort | promote-now SERVICE --env E`: command the canary in progress.

Exit 0 when the deployer answered within --wait as asked (or --wait 0), 1 otherwise: refused (no canary in
progress, a role missing), no answer in time, or a canary that ended otherwise meanwhile.
"""

import json
from typing import Annotated

import typer

from cli import api
from cli.errors import CliError

canary_app = typer.Typer(help="Pause, resume, abort or promote the canary in progress in an environment.",
                         no_args_is_help=True)

EnvOpt = Annotated[str, typer.Option("--env", "-e", help="Environment name, e.g. prod.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded with the command).")]
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for the deployer's answer (0: do not "
                                                       "wait).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
EXPECTED = {"pause": "deployment.progressed", "resume": "deployment.progressed", "abort": "verification.failed",
            "promote": "verification.passed"}
DONE = {"pause": "paused", "resume": "resumed: its step is published and judged afresh",
        "abort": "aborted: traffic is back on the serving release", "promote": "promoted: it takes all traffic"}


def _command(action: str, service: str, env: str, reason: str | None, wait: float, as_json: bool) -> None:
    answer = api.call("POST", f"/v1/services/{service}/environments/{env}/canary",
                      json={"action": action, "reason": reason, "wait": wait}, timeout=wait + 15)
    outcome = answer["outcome"]
    if as_json:
        print(json.dumps(answer, indent=2))
    what = f"the canary of {service} {answer['version']} in {env} (at {answer['share']}% of traffic)"
    if outcome is None:
        if not as_json:
            print(f"{action} of {what} requested by {answer['requested_by']} ({answer['event_id']})")
        if wait > 0:
            raise CliError(f"no answer from the deployer within {wait:g} s")
        return
    if outcome["result"] != EXPECTED[action]:
        raise CliError(f"{what} ended otherwise: {outcome['result']} ({outcome['reason']})")
    if not as_json:
        print(f"{what} {DONE[action]} (by {answer['requested_by']})")


@canary_app.command()
def pause(service: str, env: EnvOpt, reason: ReasonOpt = None, wait: WaitOpt = 30.0, as_json: JsonOpt = False) -> None:
    """Hold the canary at its share; its step is not judged until resumed (role: promoter)."""
    _command("pause", service, env, reason, wait, as_json)


@canary_app.command()
def resume(service: str, env: EnvOpt, reason: ReasonOpt = None, wait: WaitOpt = 30.0,
           as_json: JsonOpt = False) -> None:
    """Go on with a paused canary: its step is published and judged afresh (role: promoter)."""
    _command("resume", service, env, reason, wait, as_json)


@canary_app.command()
def abort(service: str, env: EnvOpt, reason: ReasonOpt = None, wait: WaitOpt = 30.0, as_json: JsonOpt = False) -> None:
    """All traffic back to the serving release, the canary stopped: verification.failed (role: promoter)."""
    _command("abort", service, env, reason, wait, as_json)


@canary_app.command("promote-now")
def promote_now(service: str, env: EnvOpt, reason: ReasonOpt = None, wait: WaitOpt = 30.0,
                as_json: JsonOpt = False) -> None:
    """All traffic to the canary now, its remaining analysis left undone (role: approver)."""
    _command("promote", service, env, reason, wait, as_json)
