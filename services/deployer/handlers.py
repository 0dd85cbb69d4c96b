"""Deployer's handler: a deployment order becomes a started, verified (or failed) release.

The order is claimed in one transaction (deployment.started), the driver acts, and the
outcome is saved with its events in a second transaction together with the inbox row.
A redelivered order finds the release already running and re-attaches instead of starting it again.
"""

import asyncio

import asyncpg
import structlog

from services.deployer import repository
from services.deployer.domain import MissingSecret, Target, needs_start, process_environment, verification_failure
from services.deployer.driver import LocalDriver, StartFailed
from shared.artifacts import file_digest
from shared.events import (DeploymentFailed, DeploymentStarted, DeploymentSucceeded, Event, EventData, GatePassed,
                           RollbackOrdered, VerificationFailed, VerificationPassed)
from shared.outbox import enqueue
from shared.runtime import ServiceRuntime

log = structlog.get_logger()


class DeployerHandlers:
    """Acts only on gate.passed and rollback.ordered: nothing else deploys."""

    def __init__(self, runtime: ServiceRuntime, driver: LocalDriver, port_base: int) -> None:
        self.runtime = runtime
        self.driver = driver
        self.port_base = port_base

    async def handle(self, event: Event) -> None:
        """Turn a deployment order into a deployment."""
        data = event.data
        if isinstance(data, GatePassed):
            target = Target(event.id, data.service, data.env, data.version, data.digest, dict(data.config),
                            data.config_version)
        elif isinstance(data, RollbackOrdered):
            target = Target(event.id, data.service, data.env, data.version, data.digest, dict(data.config),
                            data.config_version, purpose="rollback", rollback_id=data.rollback_id)
        else:
            return
        await self.deploy(event, target)

    async def deploy(self, event: Event, target: Target) -> None:
        """Claim, act through the driver, verify, then save the outcome with its events."""
        fields = dict(deployment_id=target.deployment_id, service=target.service, version=target.version,
                      digest=target.digest, env=target.env, config=target.config,
                      config_version=target.config_version, purpose=target.purpose, rollback_id=target.rollback_id)
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("select true from processed_events where event_id = $1", event.id):
                return
            slot = await repository.slot(conn, target.service, target.env, self.port_base)
            if await repository.claim(conn, target):
                await enqueue(conn, [self.runtime.event(DeploymentStarted(**fields), event)])
        self.runtime.relay.wake()
        port = slot["port"]
        try:
            pid = await self._run(target, port)
        except (MissingSecret, _ArtifactProblem) as problem:  # refused before touching what runs
            await self._save(event, target, None, "failed", str(problem),
                             [DeploymentFailed(**fields, reason=str(problem))], slot_changed=False)
            return
        except StartFailed as problem:  # the previous release was stopped; nothing runs now
            await self._save(event, target, None, "failed", str(problem),
                             [DeploymentFailed(**fields, reason=str(problem))])
            return
        checks = await self.driver.verify(pid, port, target.digest, target.version)
        failure = verification_failure(target, checks)
        outcome: list[EventData] = [DeploymentSucceeded(**fields, port=port)]
        if failure is None:
            outcome.append(VerificationPassed(**fields, checks=checks))
        else:
            outcome.append(VerificationFailed(**fields, reason=failure, checks=checks))
        await self._save(event, target, pid, "verified" if failure is None else "failed", failure, outcome)

    async def _run(self, target: Target, port: int) -> int:
        """Start the release unless it already runs; returns the pid that serves it."""
        running = self.driver.launched(target.service, target.env)
        if not needs_start(target, running):
            log.info("deployment.reattached", pid=running.pid)
            return running.pid
        variables = process_environment(target, port, self.driver.resolve_secret)
        path = self.driver.artifact_path(target.digest)
        if not path.is_file() or await asyncio.to_thread(file_digest, path) != target.digest:
            raise _ArtifactProblem(f"the store does not hold {target.digest} intact")
        if running is not None and running.alive:
            await asyncio.to_thread(self.driver.stop, running.pid)
        async with self.runtime.pool.acquire() as conn:
            await repository.record_start(conn, target)
        pid = self.driver.start(target.service, target.env, target.digest, target.config_version, variables)
        log.info("deployment.process_started", pid=pid, port=port)
        return pid

    async def _save(self, event: Event, target: Target, pid: int | None, state: str, reason: str | None,
                    outcome: list[EventData], *, slot_changed: bool = True) -> None:
        path = str(self.driver.artifact_path(target.digest))

        async def work(conn: asyncpg.Connection) -> list[Event]:
            await repository.finish(conn, target, pid, path, state, reason, slot_changed=slot_changed)
            return [self.runtime.event(data, event, index + 1) for index, data in enumerate(outcome)]

        await self.runtime.once(event, work)


class _ArtifactProblem(Exception):
    """The store's copy of the artifact is missing or does not match its digest."""
