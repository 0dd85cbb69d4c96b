"""`promote drift`: ask the deployer to compare what runs with what it promoted, now, and wait for its answers.

The request is a fact like any operator command (drift.check_requested on promotion.operations, with the caller's
verified identity); the deployer answers each with drift.checked, which names the request's id.
"""

import asyncio

from services.api.auth import Identity
from services.api.commands import current_pipeline, environment_of
from services.api.context import SOURCE, Context
from shared.platform.client import matches
from shared.contracts.events import DriftCheckRequested, new_event

MAX_SERVICES = 100
"""Services one call checks at most (without a service: those whose environments run a release)."""


async def check(ctx: Context, who: Identity, service: str | None, env: str | None, wait: float) -> dict:
    """Have the deployer check one service (one environment of it, or all) or every service that runs a release;
    what it found per environment, for each answer that arrives within `wait` seconds."""
    if env is not None:
        await ctx.require(who, "viewer", "drift-check", env, service=service)
    if service is None:
        services = await _running_services(ctx)
        if len(services) > MAX_SERVICES:
            raise await ctx.refuse(who, "drift-check", 422, f"{len(services)} services run releases, more than "
                                                            f"{MAX_SERVICES} at once: name one (promote drift SERVICE)")
    elif env is not None:
        await environment_of(ctx, who, "drift-check", service, env)
        services = [service]
    else:
        await current_pipeline(ctx, service)  # NotFound: 404
        services = [service]
    requests = {name: new_event(DriftCheckRequested(service=name, env=env, requested_by=who.subject), source=SOURCE)
                for name in services}
    futures = {name: ctx.outcomes.expect(matches("drift.checked", service=name, request_id=event.id))
               for name, event in requests.items()}
    try:
        for event in requests.values():
            await ctx.publisher.publish(event)
        if futures and wait > 0:
            await asyncio.wait(futures.values(), timeout=wait)
        answers = {name: future.result() for name, future in futures.items() if future.done()
                   and not future.cancelled()}
    finally:
        for future in futures.values():
            ctx.outcomes.forget(future)
    return {"requested_by": who.subject, "services": [
        {"service": name, "request_id": requests[name].id,
         "environments": ({env_name: found.model_dump(mode="json")
                           for env_name, found in answers[name].data.environments.items()}
                          if name in answers else None)}
        for name in services]}


async def _running_services(ctx: Context) -> list[str]:
    """Services whose environments the ledger shows running a release."""
    async with ctx.reader.acquire() as conn:
        rows = await conn.fetch("select distinct service from ledger.environments where state <> 'empty' "
                                "and version is not null order by service")
    return [row["service"] for row in rows]

