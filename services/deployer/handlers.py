"""Deployer's handler: a deployment order becomes a started, verified (or failed) release.

The order is claimed in one transaction (deployment.started), the driver acts, and the
outcome is saved with its events in a second transaction together with the inbox row.
A redelivered order finds the release already running and re-attaches instead of starting it again.
One deployment at a time per environment: a PostgreSQL session lock on (service, env) is held
from claim to save, also across deployer instances; it is released if the process dies. A canary
beside a live release is only begun here: its steps are a durable state machine of their own
(services/deployer/canaries.py), which holds the same lock for each move.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import structlog
from pydantic import TypeAdapter

from services.deployer import repository
from services.deployer.repository import Deployments, PostgresDeployments
from services.deployer.domain import (LANES, Abort, Deploy, EnvironmentState, Ignore, MissingSecret, Order, Target,
                                      decide, needs_start, order_of, process_environment, reconfigurations,
                                      strategy_for, verification_failure)
from services.deployer.drift_checks import DriftWatcher
from services.deployer.driver import Driver, StartFailed
from services.deployer.canaries import Canaries, deployment_fields, derived, outcome_events
from services.deployer.routed import RoutedDeployer, Stepwise, lane_slot
from services.deployer.router import Router
from shared.contracts.events import (CanaryCommanded, DeploymentFailed, DeploymentStarted, DriftCheckRequested,
                           EnvironmentPruned, Event, EventData, PipelineApplied)
from shared.platform import inbox
from shared.platform.outbox import enqueue
from shared.contracts.pipeline import BlueGreen, Canary, PipelineDefinition, Strategy
from shared.platform.consumer import UnitOfWork
from shared.platform.runtime import ServiceRuntime

log = structlog.get_logger()

T = TypeVar("T")
STRATEGY: TypeAdapter[Strategy] = TypeAdapter(Strategy)


class DeployerHandlers:
    """Acts only on gate.passed, rollback.ordered and pipeline.applied (a config change redeploys, a pruned
    environment stops): nothing else deploys but the drift watcher, which redeploys the promoted release of a
    drifted environment set to `on_drift: restore`; drift.check_requested asks it to check now, and
    canary.commanded pauses, resumes, aborts or promotes a canary in progress (services/deployer/canaries.py)."""

    def __init__(self, runtime: ServiceRuntime, drivers: dict[str, Driver], secrets_dir: Path,
                 port_base: int, router: Router,
                 store: Callable[[asyncpg.Connection], Deployments] = PostgresDeployments) -> None:
        self.runtime = runtime
        self.store = store
        """The deployments' repository on a connection (`repository.Deployments`)."""
        self.drivers = drivers
        self.secrets_dir = secrets_dir
        self.port_base = port_base
        self.routed = RoutedDeployer(runtime, drivers, router, port_base, self._secret, store)
        self.canaries = Canaries(runtime, self.routed, self._save)
        self.drift = DriftWatcher(runtime, drivers, self._deploy_locked, runtime.settings.drift_check_interval_s)

    async def handle(self, event: Event, unit: UnitOfWork | None = None) -> None:
        """Turn a deployment order into a deployment (each step commits on its own: the unit of work carries no
        transaction here, together=False)."""
        data = event.data
        if (order := order_of(event)) is not None:
            await self._deploy_locked(event, *order)
        elif isinstance(data, PipelineApplied):
            await self.drift.remember_policies(data)
            await self.prune(event, data)
            await self.reconfigure(event, data)
            return
        elif isinstance(data, DriftCheckRequested):
            await self.drift.answer(event, data)
            return
        elif isinstance(data, CanaryCommanded):
            async with self._environment_lock(data.service, data.env):
                await self.canaries.command(event, data)

    async def resume(self, cause: Event, target: Target, strategy: object) -> None:
        """Finish a deployment a rebuild found in flight (services/deployer/recovery.py): as a redelivered order,
        it re-attaches to what the driver runs, or starts the release if it never ran."""
        await self._deploy_locked(cause, target, STRATEGY.validate_python(strategy))

    async def reconfigure(self, event: Event, data: PipelineApplied) -> None:
        """A pipeline whose config changed for an environment redeploys what runs there with the new config.

        Same digest, new config version (e.g. a feature flag turned on): an audited change, since the
        pipeline.applied event is in the ledger and the redeployment's events name it as their cause.
        """
        async with self.runtime.pool.acquire() as conn:
            running = await self.store(conn).running_releases(data.service)
        if not running:
            return  # nothing runs yet: a first pipeline (the usual case) costs one query
        pipeline = PipelineDefinition.model_validate(data.definition)
        causes = {environment.name: derived(event, f"reconfigure/{environment.name}")
                  for environment in pipeline.environments}
        for target, strategy in reconfigurations(pipeline, running, lambda env: causes[env].id):
            log.info("deployment.reconfigure", env=target.env, config_version=target.config_version)
            await self._deploy_locked(causes[target.env], target, strategy)

    async def prune(self, event: Event, data: PipelineApplied) -> None:
        """Stop what runs in each environment the operator pruned (`--prune`), then forget it: its slot,
        its route and lanes, its router port; environment.pruned says what was stopped and by whose order."""
        for env in data.prune:
            cause = derived(event, f"prune/{env}")
            async with self._environment_lock(data.service, env) as conn:
                if await inbox.handled(conn, cause):
                    continue
                release = await self.store(conn).serving(data.service, env)
                images = await self.store(conn).ran_images(data.service, env)
                drivers = [driver for name, driver in self.drivers.items() if name != "container" or images]
                stopped = []
                for slot in (env, *(lane_slot(env, lane) for lane in LANES)):
                    for driver in drivers:
                        running = await asyncio.to_thread(driver.launched, data.service, slot)
                        if running is not None and (running.alive and running.pid or running.leftover):
                            await asyncio.to_thread(driver.stop, data.service, slot, running.pid)  # noop: pid 0
                            stopped.append(slot)
                await asyncio.to_thread(self.routed.router.remove, data.service, env)
                pruned = EnvironmentPruned(
                    service=data.service, env=env, version=release["version"] if release else None,
                    digest=release["digest"] if release else None, stopped=stopped,
                    pipeline_version=data.pipeline_version, applied_by=data.applied_by)

                async def work(conn: asyncpg.Connection, pruned: EnvironmentPruned = pruned) -> list[Event]:
                    await self.store(conn).forget(pruned.service, pruned.env)
                    return [self.runtime.event(pruned, cause)]

                await self.runtime.once(cause, work)
                log.info("environment.pruned", env=env, stopped=stopped)

    @contextlib.asynccontextmanager
    async def _environment_lock(self, service: str, env: str) -> AsyncIterator[asyncpg.Connection]:
        """The environment's deploy lock (one change at a time, across instances), on the connection yielded."""
        lock = repository.deploy_lock(service, env)
        async with self.runtime.pool.acquire() as holder:
            await holder.execute("select pg_advisory_lock(hashtext($1))", lock)
            try:
                yield holder
            finally:
                await holder.execute("select pg_advisory_unlock(hashtext($1))", lock)

    async def _deploy_locked(self, event: Event, target: Target, strategy: Strategy,
                             still_wanted: Callable[[asyncpg.Connection], Awaitable[bool]] | None = None) -> None:
        """Deploy with the environment's lock held: one deployment at a time per environment (`still_wanted`,
        asked once the lock is held, may call it off: a restore whose drift a deployment resolved meanwhile).
        What the order does to the canary in progress and which strategy it runs with is `domain.decide`'s."""
        async with self._environment_lock(target.service, target.env) as holder:
            if still_wanted is not None and not await still_wanted(holder):
                return
            canary = await self.canaries.in_progress(target.service, target.env)
            # Whether the environment is behind the router matters only to a rollback that could switch lanes.
            routed = strategy_for(strategy, target, routed=True) != strategy and \
                await self.store(holder).is_routed(target.service, target.env)
            state = EnvironmentState(routed=routed, canary=canary.view() if canary else None)
            for move in decide(state, Order(target, strategy), datetime.now(UTC)):
                match move:
                    case Ignore():
                        log.info("deployment.order_ignored", why=move.why)
                    case Abort():
                        await self.canaries.abort(canary, move)
                    case Deploy(strategy="rolling"):
                        await self.deploy(event, move.target)
                    case Deploy():
                        await self.deploy_routed(event, move.target, move.strategy)

    async def deploy(self, event: Event, target: Target) -> None:
        """Claim, act through the driver, verify, then save the outcome with its events."""
        fields = deployment_fields(target)
        slot = await self._claim(event, target,
                                 lambda store: store.slot(target.service, target.env, self.port_base))
        if slot is None:
            return
        port = slot["port"]
        serving = (target.env, port, False)
        try:
            pid = await self._run(target, port)
        except (MissingSecret, _ArtifactProblem) as problem:  # refused before touching what runs
            await self._save(event, target, None, "failed", str(problem),
                             [DeploymentFailed(**fields, reason=str(problem))], slot_changed=False, serving=serving)
            return
        except StartFailed as problem:  # the previous release was stopped; nothing runs now
            await self._save(event, target, None, "failed", str(problem),
                             [DeploymentFailed(**fields, reason=str(problem))], serving=serving)
            return
        checks = await self.drivers[target.driver].verify(target, target.env, pid, port)
        failure = verification_failure(target, checks)
        await self._save(event, target, pid, "verified" if failure is None else "failed", failure,
                         outcome_events(fields, port, checks, failure), serving=serving)

    async def deploy_routed(self, event: Event, target: Target, strategy: BlueGreen | Canary) -> None:
        """Blue/green or canary through the router: claim, deploy into a lane, move traffic, save."""
        fields = deployment_fields(target)
        claimed = await self._claim(event, target,
                                   lambda store: store.route(target.service, target.env, self.port_base))
        if claimed is None:
            return
        route, lanes = claimed
        try:
            outcome = await self.routed.deploy(target, strategy, route, lanes)
        except (MissingSecret, _ArtifactProblem, StartFailed) as problem:
            await self._save(event, target, None, "failed", str(problem),
                             [DeploymentFailed(**fields, reason=str(problem))], slot_changed=False)
            return
        if isinstance(outcome, Stepwise):  # a canary beside a live release: its steps go on without this handler
            assert isinstance(strategy, Canary)
            await self.canaries.begin(event, target, strategy, route, outcome)
            return
        events = outcome_events(fields, outcome.port, outcome.checks, outcome.failure,
                                lane=(outcome.lane, lanes[outcome.lane]["port"]))

        async def lanes_after(conn: asyncpg.Connection) -> None:
            await self.routed.save(conn, target, outcome, strategy, route)

        await self._save(event, target, outcome.pid, "verified" if outcome.failure is None else "failed",
                         outcome.failure, events, slot_changed=False, also=lanes_after,
                         serving=(lane_slot(target.env, outcome.lane), lanes[outcome.lane]["port"], True))

    async def _claim(self, event: Event, target: Target, allocate: Callable[[Deployments], Awaitable[T]]) -> T | None:
        """Open the deployment (deployment.started once) with what `allocate` gives the environment
        (its slot, or its route and lanes); None if the order was handled before."""
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            if await inbox.handled(conn, event):
                return None
            allocated = await allocate(self.store(conn))
            if await self.store(conn).claim(target):
                await enqueue(conn, [self.runtime.event(DeploymentStarted(**deployment_fields(target)), event)])
        self.runtime.relay.wake()
        return allocated

    async def _run(self, target: Target, port: int) -> int:
        """Start the release unless it already runs; returns the pid that serves it."""
        driver = self.drivers[target.driver]
        running = await asyncio.to_thread(driver.launched, target.service, target.env)
        if not needs_start(target, running):
            log.info("deployment.reattached", pid=running.pid)
            return running.pid
        variables = process_environment(target, port, self._secret)
        try:
            await asyncio.to_thread(driver.preflight, target, target.env)
        except StartFailed as problem:
            raise _ArtifactProblem(str(problem)) from None
        if target.purpose == "restore":  # what was run by hand on the environment's port gives it back
            await asyncio.to_thread(driver.evict, target.service, target.env, port)
        if running is not None and (running.alive or running.leftover):
            await asyncio.to_thread(driver.stop, target.service, target.env, running.pid)
        async with self.runtime.pool.acquire() as conn:
            await self.store(conn).record_start(target)
        # In a thread: a start forks a process (local), runs containers (container) or fsyncs a journal
        # line (noop), and the other services' deployments go on meanwhile.
        pid = await asyncio.to_thread(driver.start, target, target.env, variables)
        log.info("deployment.process_started", pid=pid, port=port)
        return pid

    async def _save(self, event: Event, target: Target, pid: int | None, state: str, reason: str | None,
                    outcome: list[EventData], *, slot_changed: bool = True,
                    also: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
                    serving: tuple[str, int, bool] | None = None) -> None:
        """Save the outcome with its events; `serving` is (slot, port, routed) where a verified release serves
        from now on: what was promoted there (drift checks compare with it), and the drift it resolves."""
        path = self.drivers[target.driver].describe(target)

        async def work(conn: asyncpg.Connection) -> list[Event]:
            await self.store(conn).finish(target, pid, path, state, reason, slot_changed=slot_changed)
            if also is not None:
                await also(conn)
            emitted = [self.runtime.event(data, event, index + 1) for index, data in enumerate(outcome)]
            verified = state == "verified"
            if verified and serving is not None:
                await self.store(conn).save_promoted(target, *serving)
            elif slot_changed:  # rolling: the release that served was stopped, and its successor failed
                await self.store(conn).promoted_replaced(target.service, target.env)
            return emitted + await self.drift.settle(conn, target, verified, verified or slot_changed)

        await self.runtime.once(event, work)

    def _secret(self, reference: str) -> str | None:
        """A secret's value from the local secret store (one file per reference), or None."""
        root = self.secrets_dir.resolve()
        path = (root / reference).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path.read_text().strip()


class _ArtifactProblem(Exception):
    """The store's copy of the artifact is missing, does not match its digest, or cannot be started: found
    before anything running is stopped."""
