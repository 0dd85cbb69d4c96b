"""Canaries as durable state machines: a row per canary in progress, moved on by a background task.

A canary's steps take as long as the pipeline says (5–10 minute steps are usual), far beyond what a
consumer may spend on one record. So the deployment order's handler only starts and verifies the
release in its lane and saves the canary (table `canaries`, with the order and the step it is at);
from then on `step()`, a background task of the deployer, moves each canary whose time has come:

    step k, not published → the router gives the canary the step's share; the analysis begins
    step k, published     → the canary's requests since the step began (router access log, from the
                            step's offset) are judged at the step's end: passed → step k+1
                            (deployment.progressed), the last share (100 %) → verified; failed →
                            traffic back to the serving lane, the canary stops (verification.failed)

Each move is saved before the router acts on it, under the environment's deploy lock (one change at
a time per environment, across instances): a deployer killed mid-step finds the row as it was and
goes on with the same step, whose analysis is read again from the step's start in the access log
(nothing counted so far is lost, nothing is started again). A move the router did not take yet is
taken again; taking one twice changes nothing. A newer order for the environment supersedes its
canary (aborted first, with the reason).
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import httpx
import structlog
from pydantic import TypeAdapter

from services.deployer import measurements, repository
from services.deployer.analysis import Figures, read_outcomes, summarise
from services.deployer.domain import (Abort, Advance, CanaryView, Complete, EnvironmentState, Hold, Ignore, Publish,
                                      Target, Wait, decide, target_from_json, target_json)
from services.deployer.routed import Outcome, RoutedDeployer, Stepwise, lane_slot
from services.deployer.router import RouterError
from shared.contracts.events import CanaryCommanded, DeploymentProgressed, DeploymentSucceeded, Event, EventData, \
    VerificationFailed, VerificationPassed, parse_event
from shared.contracts.pipeline import Canary, Strategy
from shared.platform.runtime import ServiceRuntime

log = structlog.get_logger()

STRATEGY: TypeAdapter[Strategy] = TypeAdapter(Strategy)
LOOK_SECONDS = 1.0
"""The longest the task sleeps between two looks at the canaries."""
AT_ONCE = 20
"""Canaries moved per look at most (the others' turn comes at the next)."""

Finish = Callable[..., Awaitable[None]]
"""The handlers' `_save`: the outcome of a deployment saved with its events, once per cause."""


def derived(event: Event, part: str) -> Event:
    """A part of `event`'s work under an id of its own (its inbox row), in the same correlation."""
    identity = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{event.id}/{part}"))
    return Event(envelope=event.envelope.model_copy(update={"id": identity, "correlationid": event.correlation_id}),
                 data=event.data)


def deployment_fields(target: Target) -> dict:
    """The fields every deployment event of `target` carries."""
    return dict(deployment_id=target.deployment_id, service=target.service, version=target.version,
                digest=target.digest, env=target.env, config=target.config,
                config_version=target.config_version, driver=target.driver, location=target.location,
                replicas=target.replicas, resources=target.resources, purpose=target.purpose,
                rollback_id=target.rollback_id)


def outcome_events(fields: dict, port: int, checks: dict[str, str], failure: str | None,
                   superseded_by: str | None = None, lane: tuple[str, int] | None = None) -> list[EventData]:
    """deployment.succeeded, then verification.passed or (with `failure` as the reason) verification.failed;
    `lane`: (lane, its port) of a routed release."""
    verdict = VerificationPassed(**fields, checks=checks) if failure is None else \
        VerificationFailed(**fields, reason=failure, checks=checks, superseded_by=superseded_by)
    lanes = {"lane": lane[0], "lane_port": lane[1]} if lane else {}
    return [DeploymentSucceeded(**fields, port=port, **lanes), verdict]


class _Canary:
    """A canary's row, read: what it deploys, how, where it stands."""

    def __init__(self, row: asyncpg.Record) -> None:
        self.row = row
        self.id: str = row["deployment_id"]
        self.order = parse_event(bytes(row["order_event"]))
        self.target = target_from_json(json.loads(row["target"]))
        strategy = STRATEGY.validate_python(json.loads(row["strategy"]))
        assert isinstance(strategy, Canary)
        self.strategy: Canary = strategy
        self.lane: str = row["lane"]
        self.serving: str = row["serving"]
        self.step: int = row["step"]
        self.share: int = self.strategy.steps[self.step]
        self.checks: dict[str, str] = json.loads(row["checks"])
        self.elapsed: float = self.view().elapsed(row["now"])
        """Seconds the step has run, at the database's `now` when the row was read."""

    def view(self, figures: Figures | None = None, taken: list[dict] | None = None) -> CanaryView:
        """The canary as `domain.decide` reads it, with what its step has seen so far."""
        return CanaryView(self.id, self.row["state"], self.row["published"], self.step, self.strategy,
                          self.row["step_started_at"], dict(self.checks), figures, tuple(taken or ()))

    def progressed(self, step: int, state: str = "step", by: str | None = None) -> DeploymentProgressed:
        return DeploymentProgressed(**deployment_fields(self.target), state=state, step=step + 1,
                                    steps=len(self.strategy.steps), share=self.strategy.steps[step],
                                    checks=self.checks, by=by, lane=self.lane, lane_port=self.row["lane_port"],
                                    serving=self.serving)


class Canaries:
    """The deployer's canaries in progress: begun by the order's handler, moved on by `step`."""

    def __init__(self, runtime: ServiceRuntime, routed: RoutedDeployer, finish: Finish) -> None:
        self.runtime, self.routed, self.finish = runtime, routed, finish
        self.targets_dir = runtime.settings.var_dir / "prometheus" / "targets"

    async def begin(self, order: Event, target: Target, strategy: Canary, route, stepwise: Stepwise) -> None:
        """Save the canary at its first step (with the order's inbox row), then publish that step; the caller
        holds the environment's deploy lock."""
        outcome = stepwise.outcome
        lane_port = (await self._route(target))[1][outcome.lane]["port"]

        async def work(conn: asyncpg.Connection) -> list[Event]:
            await conn.execute(
                "insert into canaries (deployment_id, service, env, order_event, target, strategy, lane, serving, "
                "pid, checks, lane_port) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                target.deployment_id, target.service, target.env, order.to_bytes(), json.dumps(target_json(target)),
                json.dumps(strategy.model_dump(mode="json")), outcome.lane, stepwise.serving, outcome.pid,
                json.dumps(outcome.checks), lane_port)
            first = DeploymentProgressed(**deployment_fields(target), state="step", step=1,
                                         steps=len(strategy.steps), share=strategy.steps[0], checks=outcome.checks,
                                         lane=outcome.lane, lane_port=lane_port, serving=stepwise.serving)
            return [self.runtime.event(first, order)]

        await self.runtime.once(order, work)
        log.info("canary.begun", deployment_id=target.deployment_id, steps=list(strategy.steps))
        route, lanes = await self._route(target)  # Prometheus scrapes both lanes' apps (their metrics' labels)
        for lane, version in ((outcome.lane, target.version), (stepwise.serving, lanes[stepwise.serving]["version"])):
            ports = await self.routed.ports(target, lanes, lane)
            await asyncio.to_thread(measurements.write_targets, self.targets_dir, target.service, target.env, lane,
                                    version or "unknown", ports)
        await self.move(target.deployment_id)

    async def in_progress(self, service: str, env: str) -> "_Canary | None":
        """The environment's canary in progress, if any."""
        async with self.runtime.pool.acquire() as conn:
            row = await self._row(conn, "service = $1 and env = $2 and state <> 'done'", service, env)
        return None if row is None else _Canary(row)

    async def abort(self, canary: "_Canary", move: Abort) -> None:
        """Abort `canary` as `move` says (the caller holds the environment's lock): superseded, or an operator's."""
        canary.checks = dict(move.checks)
        await self._fail(canary, move.reason, superseded_by=move.superseded_by)

    async def command(self, event: Event, command: CanaryCommanded) -> None:
        """An operator's pause, resume, abort or promote of the environment's canary (the caller holds the
        environment's lock), as `domain.decide` says. A command that finds no canary it applies to (none in
        progress, a pause of a paused one) changes nothing: the API refuses those it can see, and the deployer logs
        the rest."""
        canary = await self.in_progress(command.service, command.env)
        (move,) = decide(EnvironmentState(canary=canary.view() if canary else None), event, datetime.now(UTC))
        match move:
            case Ignore():
                log.warning("canary.command_ignored", action=command.action, env=command.env, why=move.why)
            case Abort():
                await self.abort(canary, move)
            case Complete():
                canary.checks = dict(move.checks)
                await self._complete(canary)
            case Hold():
                await self._hold(canary, move, event)
                log.info("canary.commanded", action=command.action, env=command.env, by=command.requested_by)
                if move.state == "running":
                    await self.move(canary.id)

    async def _hold(self, canary: "_Canary", move: Hold, event: Event) -> None:
        """Paused or resumed by an operator: a resumed step is published and judged afresh (what it showed before
        the pause is not evidence now)."""

        async def work(conn: asyncpg.Connection) -> list[Event]:
            await conn.execute("update canaries set state = $2, published = published and $2 = 'paused', "
                               "due_at = now(), updated_at = now() where deployment_id = $1", canary.id, move.state)
            progressed = canary.progressed(canary.step, move.recorded, by=move.by)
            return [self.runtime.event(progressed, derived(canary.order, f"canary/{event.id}"))]

        await self.runtime.once(event, work)

    async def step(self) -> float:
        """Move every canary whose time has come (its environment not locked by a deployment); seconds until
        the next look (a new canary's first step is published by its handler, so none waits for a look)."""
        async with self.runtime.pool.acquire() as conn:
            due = await conn.fetch("select deployment_id, service, env from canaries where state = 'running' and "
                                   "due_at <= now() order by due_at limit $1", AT_ONCE)
        failed: Exception | None = None
        for row in due:
            try:
                async with self._lock_if_free(row["service"], row["env"]) as free:
                    if free:
                        await self.move(row["deployment_id"])
            except Exception as error:  # one canary that cannot move holds back none of the others
                log.error("canary.move_failed", deployment_id=row["deployment_id"], error=repr(error))
                failed = failed or error
                async with self.runtime.pool.acquire() as conn:
                    await conn.execute("update canaries set due_at = now() + interval '5 seconds' "
                                       "where deployment_id = $1", row["deployment_id"])
        if failed is not None:
            raise failed  # shown on /health until a look succeeds; retried with backoff
        async with self.runtime.pool.acquire() as conn:
            wait = await conn.fetchval("select extract(epoch from min(due_at) - now()) from canaries "
                                       "where state = 'running'")
        return LOOK_SECONDS if wait is None else min(LOOK_SECONDS, max(0.05, float(wait)))

    async def move(self, deployment_id: str) -> None:
        """One move of a canary (the caller holds its environment's lock), as `domain.decide` says once the step's
        requests at the router are read and the measurements due are taken: publish its step, wait, advance,
        complete, fail or pause it."""
        async with self.runtime.pool.acquire() as conn:
            row = await self._row(conn, "deployment_id = $1", deployment_id)
        if row is None or row["state"] != "running":
            return
        canary = _Canary(row)
        figures, taken = None, None
        if row["published"]:
            log_path = self.routed.router.access_log(canary.target.service, canary.target.env)
            route, lanes = await self._route(canary.target)
            ports = await self.routed.ports(canary.target, lanes, canary.lane)
            outcomes, _ = await asyncio.to_thread(read_outcomes, log_path, row["log_offset"], ports)
            figures = summarise(outcomes)
            taken = await self._measure(canary, json.loads(row["measurements"]))
        (move,) = decide(EnvironmentState(canary=canary.view(figures, taken)), None, row["now"])
        log.info("canary.move", deployment_id=deployment_id, share=canary.share, move=type(move).__name__,
                 requests=figures.requests if figures else None, reason=getattr(move, "reason", None))
        match move:
            case Publish():
                await self._publish(canary)
            case Wait():
                async with self.runtime.pool.acquire() as conn:
                    await conn.execute("update canaries set due_at = now() + make_interval(secs => $2), "
                                       "measurements = $3, updated_at = now() where deployment_id = $1",
                                       deployment_id, move.seconds, json.dumps(taken))
            case Hold():
                canary.checks = dict(move.checks)
                await self._pause_inconclusive(canary, taken or [], move.because or "")
            case Abort():
                canary.checks = dict(move.checks)
                await self._fail(canary, move.reason)
            case Complete():
                canary.checks = dict(move.checks)
                await self._complete(canary)
            case Advance():
                await self._advance(canary, move)

    async def _advance(self, canary: _Canary, move: Advance) -> None:
        """On to the next step (saved, deployment.progressed), then publish it now."""
        canary.checks = dict(move.checks)

        async def work(conn: asyncpg.Connection) -> list[Event]:
            await conn.execute("update canaries set step = $2, published = false, checks = $3, due_at = now(), "
                               "updated_at = now() where deployment_id = $1", canary.id, move.step,
                               json.dumps(canary.checks))
            return [self.runtime.event(canary.progressed(move.step), canary.order, move.step)]

        await self.runtime.once(derived(canary.order, f"canary/step/{move.step}"), work)
        await self.move(canary.id)

    async def _measure(self, canary: _Canary, taken: list[dict]) -> list[dict]:
        """The step's measurements with those now due taken (each metric's next, one `interval` apart)."""
        metrics = measurements.due(canary.strategy.analysis.metrics, taken, canary.elapsed)
        if not metrics:
            return taken
        labels = {"service": canary.target.service, "env": canary.target.env, "lane": canary.lane,
                  "version": canary.target.version}
        settings = self.runtime.settings
        async with httpx.AsyncClient(timeout=settings.prometheus_timeout_s, trust_env=False) as client:
            for metric in metrics:
                found = await measurements.measure(client, settings.prometheus_url, metric, labels)
                log.info("canary.measured", metric=metric.name, verdict=found.verdict, value=found.value,
                         detail=found.detail)
                taken = [*taken, found.as_json()]
        return taken

    async def _pause_inconclusive(self, canary: _Canary, taken: list[dict], said: str) -> None:
        """An inconclusive metric with `on_inconclusive: pause`: the canary holds its share for an operator (its
        checks say why: `paused_because`)."""

        async def work(conn: asyncpg.Connection) -> list[Event]:
            await conn.execute("update canaries set state = 'paused', checks = $2, measurements = $3, "
                               "updated_at = now() where deployment_id = $1", canary.id, json.dumps(canary.checks),
                               json.dumps(taken))
            return [self.runtime.event(canary.progressed(canary.step, "paused"), cause)]

        cause = derived(canary.order, f"canary/inconclusive/{canary.step}/{canary.row['updated_at'].isoformat()}")
        await self.runtime.once(cause, work)
        log.warning("canary.paused_inconclusive", deployment_id=canary.id, reason=said)

    async def _publish(self, canary: _Canary) -> None:
        """The router gives the canary its step's share; the step's analysis begins (from the log's end)."""
        log_path = self.routed.router.access_log(canary.target.service, canary.target.env)
        offset = await asyncio.to_thread(lambda: log_path.stat().st_size if log_path.exists() else 0)
        route, lanes = await self._route(canary.target)
        try:
            await self.routed.publish(canary.target, route, lanes, canary.serving, 100 - canary.share, canary.lane,
                                      canary.share)
        except RouterError as error:
            await self._fail(canary, str(error))
            return
        async with self.runtime.pool.acquire() as conn:
            await conn.execute(
                "update canaries set published = true, step_started_at = now(), log_offset = $2, measurements = '[]', "
                "due_at = now() + make_interval(secs => $3), updated_at = now() where deployment_id = $1",
                canary.id, offset, min([canary.strategy.analysis.interval,
                                        *(metric.interval for metric in canary.strategy.analysis.metrics)]))
        log.info("canary.published", deployment_id=canary.id, share=canary.share)

    async def _complete(self, canary: _Canary) -> None:
        """The last step: all traffic to the canary, checked through the router; verified (or aborted)."""
        route, lanes = await self._route(canary.target)
        outcome = Outcome(canary.lane, canary.row["pid"], dict(canary.checks), port=route["port"])
        outcome = await self.routed.complete(canary.target, route, lanes, outcome, canary.serving)
        await self._finish(canary, route, lanes, outcome)

    async def _fail(self, canary: _Canary, failure: str, superseded_by: str | None = None) -> None:
        """Traffic back to the serving lane, the canary stopped, the deployment failed with `failure`."""
        route, lanes = await self._route(canary.target)
        outcome = Outcome(canary.lane, canary.row["pid"], dict(canary.checks), port=route["port"])
        outcome = await self.routed.abort(canary.target, route, lanes, canary.serving, outcome, failure)
        await self._finish(canary, route, lanes, outcome, superseded_by)

    async def _finish(self, canary: _Canary, route, lanes, outcome: Outcome, superseded_by: str | None = None) -> None:
        target, strategy = canary.target, canary.strategy

        async def also(conn: asyncpg.Connection) -> None:
            await self.routed.save(conn, target, outcome, strategy, route)
            await conn.execute("update canaries set state = 'done', checks = $2, updated_at = now() "
                               "where deployment_id = $1", canary.id, json.dumps(outcome.checks))

        events = outcome_events(deployment_fields(target), outcome.port, outcome.checks, outcome.failure,
                                superseded_by, lane=(outcome.lane, lanes[outcome.lane]["port"]))
        await self.finish(derived(canary.order, "canary/outcome"), target, outcome.pid,
                          "verified" if outcome.failure is None else "failed", outcome.failure, events,
                          slot_changed=False, also=also,
                          serving=(lane_slot(target.env, outcome.lane), lanes[outcome.lane]["port"], True))
        log.info("canary.finished", deployment_id=canary.id, failure=outcome.failure)

    async def _route(self, target: Target):
        async with self.runtime.pool.acquire() as conn:
            return await repository.route(conn, target.service, target.env, self.routed.port_base)

    @staticmethod
    async def _row(conn: asyncpg.Connection, where: str, *args) -> asyncpg.Record | None:
        return await conn.fetchrow(f"select *, now() as now from canaries where {where}", *args)

    @contextlib.asynccontextmanager
    async def _lock_if_free(self, service: str, env: str) -> AsyncIterator[bool]:
        """The environment's deploy lock if no deployment holds it (True), else nothing (False)."""
        lock = repository.deploy_lock(service, env)
        async with self.runtime.pool.acquire() as holder:
            free = await holder.fetchval("select pg_try_advisory_lock(hashtext($1))", lock)
            try:
                yield free
            finally:
                if free:
                    await holder.execute("select pg_advisory_unlock(hashtext($1))", lock)

