"""`promote canary pause | resume | abort | promote-now`: an operator's command to the canary in progress.

Pausing, resuming and aborting need the promoter role in the environment; promoting now, which leaves the
rest of the analysis undone, needs the approver role there. The API refuses (409, recorded) a command the
ledger shows cannot apply — no canary in progress, a pause of a paused one, a resume of a running one — then
states the fact (canary.commanded, with the caller's verified identity) and waits for the deployer's answer:
deployment.progressed (paused, resumed), verification.failed (aborted) or verification.passed (promoted).
"""

import json

from services.api.auth import Identity
from services.api.commands import environment_of, wait_for
from services.api.context import Context
from shared.contracts.events import CanaryCommanded

ROLES = {"pause": "promoter", "resume": "promoter", "abort": "promoter", "promote": "approver"}
OUTCOME_TYPES = ("deployment.started", "deployment.progressed", "deployment.succeeded", "deployment.failed",
                 "verification.passed", "verification.failed")


async def in_progress(ctx: Context, service: str, env: str) -> dict | None:
    """The canary in progress in the environment as the ledger shows it (its last deployment.progressed when
    nothing ended it since), or None."""
    async with ctx.reader.acquire() as conn:
        last = await conn.fetchrow("select type, canonical from ledger.entries where service = $1 and env = $2 "
                                   "and type = any($3::text[]) order by seq desc limit 1", service, env,
                                   list(OUTCOME_TYPES))
    if last is None or last["type"] != "deployment.progressed":
        return None
    return json.loads(bytes(last["canonical"]))["data"]


async def command(ctx: Context, who: Identity, service: str, env: str, action: str, reason: str | None,
                  wait: float) -> dict:
    """Pause, resume, abort or promote the environment's canary; the deployer's answer when it comes within
    `wait` seconds."""
    name = f"canary-{'promote-now' if action == 'promote' else action}"
    where = dict(service=service, env=env)
    await ctx.require(who, ROLES[action], name, env, service=service)
    await environment_of(ctx, who, name, service, env)
    canary = await in_progress(ctx, service, env)
    if canary is None:
        raise await ctx.refuse(who, name, 409, f"no canary is in progress in {env}", **where)
    paused = canary["state"] == "paused"
    if action == "pause" and paused or action == "resume" and not paused:
        raise await ctx.refuse(who, name, 409, f"the canary of {canary['version']} in {env} is "
                                               f"{'paused already' if paused else 'not paused'}", **where)
    data = CanaryCommanded(service=service, env=env, action=action, requested_by=who.subject, reason=reason)
    mine = dict(where, deployment_id=canary["deployment_id"])
    expected = {"pause": {"deployment.progressed": dict(mine, state="paused", by=who.subject)},
                "resume": {"deployment.progressed": dict(mine, state="resumed", by=who.subject)},
                "abort": {"verification.failed": mine}, "promote": {"verification.passed": mine}}[action]
    event_id, outcome = await wait_for(ctx, expected, lambda: ctx.publish(data), wait)
    answer: dict = {"event_id": event_id, "requested_by": who.subject, "action": action,
                    "version": canary["version"], "share": canary["share"], "outcome": None}
    if outcome is not None:
        answer["outcome"] = {"result": outcome.envelope.type, "reason": getattr(outcome.data, "reason", None),
                             "share": getattr(outcome.data, "share", None)}
    return answer
