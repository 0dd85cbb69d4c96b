"""The operator commands: each checks who calls, what they name and the rule that counts, then states the fact.

Approving names a release that exists (its digest is in the approval), in an environment its pipeline
has; the author cannot approve where the gate says `not_author`, and a gate with `from` counts only its
groups' members — refused here with the rule, and judged again by gates. Who acted is always the
verified subject, never a name the caller chose.
"""

import asyncio
import json
from collections.abc import Callable

from services.api.auth import Identity
from services.api.context import Context
from services.api.reads import NotFound
from shared.platform.client import matches
from shared.contracts.events import ApprovalGranted, ApprovalRejected, Event, PipelineApplied, RollbackRequested
from shared.contracts.pipeline import ApprovalGate, Environment, PipelineDefinition, PipelineError, parse_pipeline


DECIDE_ROLE = "approver"
"""The role an approval or a rejection needs in its environment."""
ROLLBACK_ROLE = "promoter"
"""The role a rollback needs in its environment."""


async def wait_for(ctx: Context, outcomes: dict[str, dict], publish, timeout: float) -> tuple[str, Event | None]:
    """Publish (after registering the wait) and return (event id, the first matching outcome or None)."""
    checks = [matches(kind, **fields) for kind, fields in outcomes.items()]
    event_id, arrived = await wait_for_each(ctx, {"outcome": lambda event: any(check(event) for check in checks)},
                                            publish, timeout)
    return event_id, arrived.get("outcome")


async def wait_for_each(ctx: Context, expected: dict[str, Callable[[Event], bool]], publish,
                        timeout: float) -> tuple[str, dict[str, Event]]:
    """Publish (after registering the waits) and return (event id, {key: the first event matching that key's
    predicate}) for those that arrived within `timeout` seconds."""
    futures = {key: ctx.outcomes.expect(check) for key, check in expected.items()}
    try:
        event_id = await publish()
        if futures and timeout > 0:
            await asyncio.wait(futures.values(), timeout=timeout)  # on timeout nothing is cancelled
        return event_id, {key: future.result() for key, future in futures.items()
                          if future.done() and not future.cancelled()}
    finally:
        for future in futures.values():
            ctx.outcomes.forget(future)


async def current_pipeline(ctx: Context, service: str) -> PipelineDefinition:
    """The service's pipeline as last applied (from the ledger); NotFound without one."""
    async with ctx.reader.acquire() as conn:
        row = await conn.fetchval("select canonical from ledger.entries where service = $1 and "
                                  "type = 'pipeline.applied' order by seq desc limit 1", service)
    if row is None:
        raise NotFound(f"unknown service {service!r}: no pipeline applied (promote pipeline apply FILE)")
    return PipelineDefinition.model_validate(json.loads(bytes(row))["data"]["definition"])


async def environment_of(ctx: Context, who: Identity, action: str, service: str, env: str,
                         version: str | None = None) -> Environment:
    """The environment `env` of the service's current pipeline; refused (404, recorded) if either is unknown."""
    where = dict(service=service, env=env, version=version)
    try:
        pipeline = await current_pipeline(ctx, service)
    except NotFound as missing:
        raise await ctx.refuse(who, action, 404, str(missing), **where) from None
    try:
        return pipeline.environment(env)
    except KeyError:
        raise await ctx.refuse(who, action, 404, f"environment {env!r} is not in {service}'s pipeline "
                                                 f"({', '.join(pipeline.environment_names)})", **where) from None


async def decide(ctx: Context, who: Identity, service: str, version: str, env: str, granted: bool,
                 comment: str | None, wait: float) -> dict:
    """Approve or reject a release for an environment; the gate's verdict when it comes within `wait`."""
    action = "approve" if granted else "reject"
    where = dict(service=service, env=env, version=version)
    await ctx.require(who, DECIDE_ROLE, action, env, service=service, version=version)
    environment = await environment_of(ctx, who, action, service, env, version)
    async with ctx.reader.acquire() as conn:
        artifact = await ctx.ledger(conn).artifact(service, version)
    if artifact is None:
        raise await ctx.refuse(who, action, 404, f"{service} {version} is not registered: an approval names "
                                                 "a release that exists", **where)
    author, digest = artifact
    if granted and (rule := gate_rule(environment.gates, who, author)):
        raise await ctx.refuse(who, action, 403, rule, **where)
    model = ApprovalGranted if granted else ApprovalRejected
    data = model(service=service, version=version, env=env, approver=who.subject, groups=who.groups,
                 digest=digest, comment=comment)
    event_id, verdict = await wait_for(ctx, {"gate.passed": where, "gate.pending": where, "gate.failed": where},
                                       lambda: ctx.publish(data), wait)
    return {"event_id": event_id, "recorded": "approval" if granted else "rejection", "approver": who.subject,
            "digest": digest, "verdict": _verdict(verdict)}


def gate_rule(gates, who: Identity, author: str) -> str | None:
    """Why an approval gate of the environment would not count this approver (None: it would)."""
    for gate in gates:
        if not isinstance(gate, ApprovalGate):
            continue
        if gate.not_author and who.subject == author:
            return f"you are the author of this release ({author}): this environment's approvals must come from " \
                   "someone else"
        if gate.groups and not gate.groups & set(who.groups):
            return f"this environment's approvals must come from a member of {' or '.join(sorted(gate.groups))} " \
                   f"(your groups: {', '.join(who.groups) or 'none'})"
    return None


def _verdict(event: Event | None) -> dict | None:
    if event is None:
        return None
    return {"outcome": event.envelope.type.split(".")[1], "reasons": list(getattr(event.data, "reasons", []))}


async def rollback(ctx: Context, who: Identity, service: str, env: str, reason: str | None, wait: float) -> dict:
    """Ask for the environment's return to its last verified release; the outcome when it comes within `wait`."""
    where = dict(service=service, env=env)
    await ctx.require(who, ROLLBACK_ROLE, "rollback", env, service=service)
    await environment_of(ctx, who, "rollback", service, env)
    data = RollbackRequested(service=service, env=env, requested_by=who.subject, reason=reason)
    event_id, outcome = await wait_for(ctx, {"rollback.completed": where, "rollback.failed": where},
                                       lambda: ctx.publish(data), wait)
    result: dict = {"event_id": event_id, "requested_by": who.subject, "outcome": None}
    if outcome is not None:
        result["outcome"] = {"result": outcome.envelope.type.split(".")[1],
                             "version": getattr(outcome.data, "version", None),
                             "digest": getattr(outcome.data, "digest", None),
                             "reason": getattr(outcome.data, "reason", None)}
    return result


async def apply_pipeline(ctx: Context, who: Identity, text: str, filename: str, prune: bool, wait: float) -> dict:
    """Validate a pipeline file (the same limits as `pipeline validate`) and publish it, versioned by content.

    A pipeline that drops environments still running a release is refused unless `prune`: then the
    event names them, the deployer stops what runs there, and the answer carries each
    environment.pruned that arrives within `wait` seconds."""
    await ctx.require(who, "admin", "pipeline-apply")
    try:
        definition = parse_pipeline(text, filename)
    except PipelineError as error:
        raise await ctx.refuse(who, "pipeline-apply", 422, str(error).replace("\n", "; ")) from None
    running = await _running_outside(ctx, definition)
    if running and not prune:
        listed = ", ".join(f"{env} ({version})" for env, version in running)
        raise await ctx.refuse(who, "pipeline-apply", 409, f"the pipeline drops environments that still run a "
                                                           f"release: {listed}; apply with --prune to stop them",
                               service=definition.service)
    dropped = [env for env, _version in running]
    data = PipelineApplied(service=definition.service, pipeline_version=definition.content_hash,
                           definition=definition.model_dump(mode="json"), applied_by=who.subject, prune=dropped)
    expected = {env: matches("environment.pruned", service=definition.service, env=env,
                             pipeline_version=definition.content_hash) for env in dropped}
    event_id, done = await wait_for_each(ctx, expected, lambda: ctx.publish(data), wait)
    return {"event_id": event_id, "service": definition.service, "pipeline_version": definition.content_hash,
            "environments": definition.environment_names, "applied_by": who.subject,
            "pruned": [{"env": env, "version": version,
                        "stopped": list(done[env].data.stopped) if env in done else None}
                       for env, version in running]}


async def _running_outside(ctx: Context, definition: PipelineDefinition) -> list[tuple[str, str]]:
    """(environment, version) of what runs in environments the new definition no longer has."""
    async with ctx.reader.acquire() as conn:
        rows = await conn.fetch("select env, version from ledger.environments where service = $1 "
                                "and state <> 'empty' and version is not null order by env", definition.service)
    return [(row["env"], row["version"]) for row in rows if row["env"] not in definition.environment_names]
