"""What the caller may do to one service, and why not: the console enables a button only where this says yes,
and shows the reason where it says no (the commands check the same rules again when they are called).

The rules are the commands' own: the role each command needs in the environment (services.api.roles), and for
an approval the gate's rule that would not count this approver (services.api.commands.gate_rule: the author,
a group that approvals must come from).
"""

from services.api import canary
from services.api.auth import Identity
from services.api.commands import DECIDE_ROLE, ROLLBACK_ROLE, current_pipeline, gate_rule
from services.api.dead_letters import RESUBMIT_ROLE
from services.api.context import Context
from services.api.roles import refusal


async def of_service(ctx: Context, who: Identity, service: str) -> dict:
    """Per environment of the service's pipeline: `rollback`, each canary action, and, for each release waiting
    at its gates, `approve` and `reject`, each None (allowed) or the reason it is not; and `resubmit` (dead
    letters, any service) likewise. NotFound without a pipeline."""
    pipeline = await current_pipeline(ctx, service)
    async with ctx.reader.acquire() as conn:
        waiting = await conn.fetch("select env, version from ledger.waiting where service = $1 and outcome <> 'passed' "
                                   "order by version", service)
        authors = {row["version"]: row["author"] for row in await conn.fetch(
            "select version, author from ledger.artifacts where service = $1 and version = any($2::text[])",
            service, [row["version"] for row in waiting])}
    environments = {}
    for environment in pipeline.environments:
        env = environment.name
        approver = refusal(who.bindings, DECIDE_ROLE, env)
        decisions = {}
        for row in waiting:
            if row["env"] != env:
                continue
            author = authors.get(row["version"])
            rule = gate_rule(environment.gates, who, author) if author is not None else None
            decisions[row["version"]] = {"approve": approver or rule, "reject": approver}
        environments[env] = {
            "rollback": refusal(who.bindings, ROLLBACK_ROLE, env),
            "canary": {action: refusal(who.bindings, role, env) for action, role in canary.ROLES.items()},
            "decisions": decisions,
        }
    return {"service": service, "subject": who.subject, "environments": environments,
            "resubmit": refusal(who.bindings, RESUBMIT_ROLE)}
