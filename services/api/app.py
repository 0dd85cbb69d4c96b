"""Builds the operator API (FastAPI) from settings; connections open in its lifespan, not at import.

Every route but /health authenticates the caller (services.api.auth) and checks its role
(services.api.roles); a refusal is answered in one line and recorded in the ledger. The OpenAPI
document is at /openapi.json.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from services.api import canary, commands, console, dead_letters, drift, permissions, roles, tokens
from services.api.auth import Authenticator, AuthError, Identity
from services.api.live import MAX_LIVE_SERVICES, LiveFeed
from services.api.context import Context
from services.api.outcomes import Outcomes
from services.api.reads import NotFound, NotYet
from shared.contracts import limits
from shared.platform.client import Publisher
from shared.platform.credentials import READER, database_dsn
from shared.platform.db import connect, migrate
from shared.contracts.limits import EnvironmentName, Identity as IdentityName, ServiceName, Text, Version
from shared.platform.settings import Settings

WAIT_LIMIT_S = 120.0


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Decision(_Body):
    """An approval or a rejection of a release for an environment."""

    env: EnvironmentName
    decision: str = Field(pattern="^(granted|rejected)$")
    comment: Text | None = None
    wait: float = Field(15.0, ge=0, le=WAIT_LIMIT_S)


class Rollback(_Body):
    """A request to return an environment to its last verified release."""

    env: EnvironmentName
    reason: Text | None = None
    wait: float = Field(60.0, ge=0, le=WAIT_LIMIT_S)


class CanaryCommand(_Body):
    """A command to the canary in progress in an environment."""

    action: Literal["pause", "resume", "abort", "promote"]
    reason: Text | None = None
    wait: float = Field(30.0, ge=0, le=WAIT_LIMIT_S)


class DriftCheck(_Body):
    """A request that the deployer compare what runs with what it promoted, now: one service (one environment of
    it, or all), or every service that runs a release."""

    service: ServiceName | None = None
    env: EnvironmentName | None = None
    wait: float = Field(15.0, ge=0, le=WAIT_LIMIT_S)


class Pipeline(_Body):
    """A pipeline file's text (validated exactly as `promote pipeline validate` does)."""

    yaml: str = Field(max_length=limits.MAX_PIPELINE_BYTES)
    filename: str = Field("<pipeline>", max_length=255)
    prune: bool = False
    wait: float = Field(30.0, ge=0, le=WAIT_LIMIT_S)


class NewToken(_Body):
    """An API token for a person or a robot, with role bindings such as `approver:prod`."""

    subject: IdentityName
    roles: list[str] = Field(min_length=1, max_length=32)
    groups: list[IdentityName] = Field(default_factory=list, max_length=32)
    expires_in_s: int | None = Field(None, ge=60, le=366 * 86400)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The operator API app."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = await connect(database_dsn(settings), "api", max_size=4)
        await migrate(own, "api", "services.api")
        reader = await connect(database_dsn(settings, READER), "ledger", max_size=4)
        await bootstrap_admin_token(settings, own)
        outcomes = Outcomes(settings)
        outcomes.listen(live.hand, lambda: bool(live.streams))
        await outcomes.start()
        async with Publisher(settings, "api") as publisher:
            app.state.ctx = Context(settings, own, reader, publisher, outcomes, Authenticator(settings, own))
            try:
                yield
            finally:
                await outcomes.stop()
                await reader.close()
                await own.close()

    app = FastAPI(title="promote operator API", version="0.1.0", lifespan=lifespan,
                  description="Approve, reject, roll back, apply pipelines, resubmit dead letters, and read status, "
                              "history and audits. Every call needs `Authorization: Bearer <token>`.")
    app.state.live = live = LiveFeed()
    app.exception_handler(RequestValidationError)(_one_line_validation_error)
    app.exception_handler(NotFound)(_not_found)
    app.exception_handler(NotYet)(_not_yet)
    _routes(app)
    return app


async def bootstrap_admin_token(settings: Settings, pool) -> None:
    """The local stack's first admin: a token written to settings.api_bootstrap_token_file (0600) if that file
    does not exist yet; with it an operator creates everyone else's (`promote token create`)."""
    path = settings.api_bootstrap_token_file
    if path is None or path.exists():
        return
    token, token_id, digest = tokens.new_token()
    async with pool.acquire() as conn:
        await tokens.insert(conn, token_id, digest, "admin", ["admin:*"], [], "bootstrap", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")


async def _one_line_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """A request that breaks a limit: 422 with the first problem in one line (as the CLI prints it)."""
    first = error.errors()[0]
    if first["type"].startswith("limit_"):  # a limit's reason names the value already
        return JSONResponse({"detail": first["msg"]}, 422)
    where = ".".join(str(part) for part in first["loc"][1:])  # without path/query/body
    return JSONResponse({"detail": f"{where}: {first['msg']}" if where else first["msg"]}, 422)


async def _not_found(request: Request, error: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, 404)


async def _not_yet(request: Request, error: NotYet) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, 409, headers={"Retry-After": "2"})


def ctx_of(request: Request) -> Context:
    """The process's shared connections."""
    return request.app.state.ctx


async def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Identity:
    """The authenticated caller; 401 (recorded) otherwise."""
    ctx = ctx_of(request)
    try:
        return await ctx.authenticator.identify(authorization)
    except AuthError as error:
        service = request.path_params.get("service")
        raise await ctx.refuse("anonymous", "authenticate", 401, str(error), service=service) from None


Caller = Annotated[Identity, Depends(caller)]


async def viewer(request: Request, who: Caller) -> Identity:
    """A caller with any role (every role may read)."""
    if not who.bindings:
        raise await ctx_of(request).refuse(who, "read", 403, "this needs a role (viewer or more): you have none")
    return who


Viewer = Annotated[Identity, Depends(viewer)]


def _routes(app: FastAPI) -> None:
    @app.get("/health", tags=["health"])
    async def health(request: Request) -> dict:
        """Liveness (no authentication)."""
        return {"service": "api", "status": "ok"}

    @app.get("/v1/whoami", tags=["identity"])
    async def whoami(who: Caller) -> dict:
        """Who the token says you are, and your roles."""
        return {"subject": who.subject, "roles": sorted(map(str, who.bindings)), "groups": list(who.groups),
                "method": who.method}

    @app.get("/v1/status", tags=["read"])
    async def status(request: Request, who: Viewer, service: ServiceName | None = None) -> dict:
        """What runs in each environment of one service (or every service), and what waits to enter."""
        async with ctx_of(request).reader.acquire() as conn:
            ledger = ctx_of(request).ledger(conn)
            names = [service] if service else await ledger.services()
            return {"services": [await ledger.status(name) for name in names]}

    @app.get("/v1/grid", tags=["read"])
    async def grid(request: Request, who: Viewer, search: Annotated[str | None, Query(max_length=63)] = None,
                   limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
                   offset: Annotated[int, Query(ge=0)] = 0) -> dict:
        """Every service × environment (or those whose name contains `search`): what runs, its state and since
        when, its drift, and what waits at its gates; `total` services match."""
        async with ctx_of(request).reader.acquire() as conn:
            return await ctx_of(request).ledger(conn).grid(search or None, limit, offset)

    @app.get("/v1/live", tags=["read"], response_class=StreamingResponse)
    async def follow(request: Request, who: Viewer, service: Annotated[list[ServiceName], Query()] = []) \
            -> StreamingResponse:  # noqa: B006
        """Server-sent events: each change to an environment (release, state) or to what waits at its gates, as
        it happens (`event: change`, JSON), for the services named (repeatable; none: every service)."""
        if len(service) > MAX_LIVE_SERVICES:
            raise HTTPException(422, f"at most {MAX_LIVE_SERVICES} services per stream (none: every service)")
        return StreamingResponse(request.app.state.live.follow(frozenset(service)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/v1/services/{service}/history", tags=["read"])
    async def history(request: Request, who: Viewer, service: ServiceName, env: EnvironmentName | None = None,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 50) -> dict:
        """The service's ledger entries, oldest first."""
        async with ctx_of(request).reader.acquire() as conn:
            return {"entries": await ctx_of(request).ledger(conn).history(service, env, limit)}

    @app.get("/v1/services/{service}/releases/{version}/audit", tags=["read"])
    async def audit(request: Request, who: Viewer, service: ServiceName, version: Version) -> dict:
        """Every ledger entry about one release, and the hash-chain check."""
        async with ctx_of(request).reader.acquire() as conn:
            ledger = ctx_of(request).ledger(conn)
            events = await ledger.audit(service, version)
            graph = await ledger.graph_if_any(service) if events else []
            return {"service": service, "version": version, "events": events, "graph": graph,
                    "chain": await ledger.verify_chain()}

    @app.get("/v1/services/{service}/environments/{env}/bundle", tags=["read"])
    async def bundle(request: Request, who: Viewer, service: ServiceName, env: EnvironmentName) -> dict:
        """The evidence bundle of the release running in `env`: its ledger entries with their hash links and
        inclusion proofs against the ledger's latest signed checkpoint (promote verify-bundle checks it)."""
        async with ctx_of(request).reader.acquire() as conn:
            return await ctx_of(request).ledger(conn).bundle(service, env)

    @app.get("/v1/services/{service}/actions", tags=["read"])
    async def actions(request: Request, who: Viewer, service: ServiceName) -> dict:
        """What you may do to the service, per environment (roll back, each canary action, approve and reject each
        release waiting at its gates), and resubmit dead letters: each null (you may) or the reason you may not."""
        return await permissions.of_service(ctx_of(request), who, service)

    @app.get("/v1/ledger/chain", tags=["read"])
    async def chain(request: Request, who: Viewer) -> dict:
        """Walk the ledger's hash chain."""
        async with ctx_of(request).reader.acquire() as conn:
            return await ctx_of(request).ledger(conn).verify_chain()

    @app.post("/v1/services/{service}/releases/{version}/decisions", tags=["commands"])
    async def decide(request: Request, who: Caller, service: ServiceName, version: Version, body: Decision) -> dict:
        """Approve or reject a release for an environment (role: approver there)."""
        return await commands.decide(ctx_of(request), who, service, version, body.env, body.decision == "granted",
                                     body.comment, body.wait)

    @app.post("/v1/services/{service}/rollbacks", tags=["commands"])
    async def rollback(request: Request, who: Caller, service: ServiceName, body: Rollback) -> dict:
        """Return an environment to its last verified release (role: promoter there)."""
        return await commands.rollback(ctx_of(request), who, service, body.env, body.reason, body.wait)

    @app.post("/v1/services/{service}/environments/{env}/canary", tags=["commands"])
    async def canary_command(request: Request, who: Caller, service: ServiceName, env: EnvironmentName,
                             body: CanaryCommand) -> dict:
        """Pause, resume or abort the canary in progress in `env` (role: promoter there), or promote it now,
        leaving its analysis undone (role: approver there)."""
        return await canary.command(ctx_of(request), who, service, env, body.action, body.reason, body.wait)

    @app.post("/v1/drift-checks", tags=["commands"])
    async def drift_check(request: Request, who: Viewer, body: DriftCheck) -> dict:
        """Compare what runs with what was promoted, now (role: viewer; there, when one environment is named)."""
        if body.env is not None and body.service is None:
            raise HTTPException(422, "env: name the service too")
        return await drift.check(ctx_of(request), who, body.service, body.env, body.wait)

    @app.post("/v1/pipelines", tags=["commands"])
    async def apply_pipeline(request: Request, who: Caller, body: Pipeline) -> dict:
        """Validate and apply a pipeline (role: admin); with `prune`, stop what runs in the environments it drops."""
        return await commands.apply_pipeline(ctx_of(request), who, body.yaml, body.filename, body.prune, body.wait)

    _dead_letter_routes(app)
    _token_routes(app)
    console.routes(app)


def _dead_letter_routes(app: FastAPI) -> None:
    @app.get("/v1/dead-letters", tags=["dead letters"])
    async def list_dead_letters(request: Request, who: Viewer,
                                limit: Annotated[int, Query(ge=0, le=10_000)] = 50) -> dict:
        """The last `limit` dead letters, oldest first."""
        letters = await dead_letters.read_dead_letters(ctx_of(request).settings, limit)
        return {"dead_letters": [letter.to_json() for letter in letters]}

    @app.post("/v1/dead-letters/{letter_id}/replay", tags=["dead letters"])
    async def replay(request: Request, who: Caller, letter_id: str) -> dict:
        """Resubmit a dead letter to the topic it came from (role: admin; operator topics only)."""
        ctx = ctx_of(request)
        await ctx.require(who, dead_letters.RESUBMIT_ROLE, "dlq-replay")
        try:
            letter = await dead_letters.read_dead_letter(ctx.settings, letter_id[:40])
            stored = await dead_letters.resubmit(ctx.settings, letter, who.subject)
        except dead_letters.DeadLetterError as error:
            raise await ctx.refuse(who, "dlq-replay", error.status, str(error)) from None
        return {"id": letter.id, "topic": stored.topic, "partition": stored.partition, "offset": stored.offset,
                "replayed_by": who.subject}


def _token_routes(app: FastAPI) -> None:
    async def admin(request: Request, who: Caller, action: str) -> Context:
        ctx = ctx_of(request)
        await ctx.require(who, "admin", action)
        return ctx

    @app.post("/v1/tokens", tags=["tokens"])
    async def create_token(request: Request, who: Caller, body: NewToken) -> dict:
        """Create an API token (role: admin); the token is in this answer only."""
        ctx = await admin(request, who, "token-create")
        try:
            bindings = sorted({str(roles.Binding.parse(text)) for text in body.roles})
        except roles.BindingError as error:
            raise HTTPException(422, str(error)) from None
        token, token_id, digest = tokens.new_token()
        expires = datetime.now(UTC) + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
        async with ctx.own.acquire() as conn:
            await tokens.insert(conn, token_id, digest, body.subject, bindings, body.groups, who.subject, expires)
        return {"id": token_id, "token": token, "subject": body.subject, "roles": bindings,
                "expires_at": expires.isoformat() if expires else None}

    @app.get("/v1/tokens", tags=["tokens"])
    async def list_tokens(request: Request, who: Caller) -> dict:
        """Every API token (no secrets: they are not kept) (role: admin)."""
        ctx = await admin(request, who, "token-list")
        async with ctx.own.acquire() as conn:
            return {"tokens": [record.to_json() for record in await tokens.listed(conn)]}

    @app.delete("/v1/tokens/{token_id}", tags=["tokens"])
    async def revoke_token(request: Request, who: Caller, token_id: str) -> dict:
        """Revoke an API token at once (role: admin)."""
        ctx = await admin(request, who, "token-revoke")
        async with ctx.own.acquire() as conn:
            if not await tokens.revoke(conn, token_id[:20]):
                raise HTTPException(404, f"no active token {token_id[:20]!r}")
        return {"id": token_id, "revoked_by": who.subject}
