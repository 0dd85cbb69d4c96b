"""Deployer's handler: a deployment order becomes a started, verified (or failed) release.

The order is claimed in one transaction (deployment.started), the driver acts, and the
outcome is saved with its events in a second transaction together with the inbox row.
A redelivered order finds the release already running and re-attaches instead of starting it again.
One deployment at a time per environment: a PostgreSQL session lock on (service, env) is held
from claim to save, also across deployer instances; it is released if the process dies.
"""

import asyncio
from pathlib import Path

import asyncpg
import structlog

from services.deployer import repository
from services.deployer.domain import MissingSecret, Target, needs_start, process_environment, verification_failure
from services.deployer.driver import Driver, StartFailed
from shared.artifacts import file_digest
from shared.events import (DeploymentFailed, DeploymentStarted, DeploymentSucceeded, Event, EventData, GatePassed,
                           RollbackOrdered, VerificationFailed, VerificationPassed)
from shared.outbox import enqueue
from shared.runtime import ServiceRuntime

log = structlog.get_logger()


class DeployerHandlers:
    """Acts only on gate.passed and rollback.ordered: nothing else deploys."""

    def __init__(self, runtime: ServiceRuntime, drivers: dict[str, Driver], secrets_dir: Path,
                 port_base: int) -> None:
        self.runtime = runtime
        self.drivers = drivers
        self.secrets_dir = secrets_dir
        self.port_base = port_base

    async def handle(self, event: Event) -> None:
        """Turn a deployment order into a deployment."""
        data = event.data
        if isinstance(data, GatePassed):
            target = Target(event.id, data.service, data.env, data.version, data.digest, dict(data.config),
                            data.config_version, driver=data.driver)
        elif isinstance(data, RollbackOrdered):
            target = Target(event.id, data.service, data.env, data.version, data.digest, dict(data.config),
                            data.config_version, purpose="rollback", rollback_id=data.rollback_id,
                            driver=data.driver)
        else:
            return
        lock = f"deploy:{target.service}:{target.env}"
        async with self.runtime.pool.acquire() as holder:
            await holder.execute("select pg_advisory_lock(hashtext($1))", lock)
            try:
                await self.deploy(event, target)
            finally:
                await holder.execute("select pg_advisory_unlock(hashtext($1))", lock)

    async def deploy(self, event: Event, target: Target) -> None:
        """Claim, act through the driver, verify, then save the outcome with its events."""
        fields = dict(deployment_id=target.deployment_id, service=target.service, version=target.version,
                      digest=target.digest, env=target.env, config=target.config,
                      config_version=target.config_version, driver=target.driver, purpose=target.purpose,
                      rollback_id=target.rollback_id)
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
        checks = await self.drivers[target.driver].verify(pid, port, target.digest, target.version)
        failure = verification_failure(target, checks)
        outcome: list[EventData] = [DeploymentSucceeded(**fields, port=port)]
        if failure is None:
            outcome.append(VerificationPassed(**fields, checks=checks))
        else:
            outcome.append(VerificationFailed(**fields, reason=failure, checks=checks))
        await self._save(event, target, pid, "verified" if failure is None else "failed", failure, outcome)

    async def _run(self, target: Target, port: int) -> int:
        """Start the release unless it already runs; returns the pid that serves it."""
        driver = self.drivers[target.driver]
        running = driver.launched(target.service, target.env)
        if not needs_start(target, running):
            log.info("deployment.reattached", pid=running.pid)
            return running.pid
        variables = process_environment(target, port, self._secret)
        path = driver.artifact_path(target.digest)
        if not path.is_file() or await asyncio.to_thread(file_digest, path) != target.digest:
            raise _ArtifactProblem(f"the store does not hold {target.digest} intact")
        if running is not None and running.alive:
            await asyncio.to_thread(driver.stop, running.pid)
        async with self.runtime.pool.acquire() as conn:
            await repository.record_start(conn, target)
        pid = driver.start(target.service, target.env, target.digest, target.config_version, variables)
        log.info("deployment.process_started", pid=pid, port=port)
        return pid

    async def _save(self, event: Event, target: Target, pid: int | None, state: str, reason: str | None,
                    outcome: list[EventData], *, slot_changed: bool = True) -> None:
        path = str(self.drivers[target.driver].artifact_path(target.digest))

        async def work(conn: asyncpg.Connection) -> list[Event]:
            await repository.finish(conn, target, pid, path, state, reason, slot_changed=slot_changed)
            return [self.runtime.event(data, event, index + 1) for index, data in enumerate(outcome)]

        await self.runtime.once(event, work)


    def _secret(self, reference: str) -> str | None:
        """A secret's value from the local secret store (one file per reference), or None."""
        root = self.secrets_dir.resolve()
        path = (root / reference).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path.read_text().strip()


class _ArtifactProblem(Exception):
    """The store's copy of the artifact is missing or does not match its digest."""
