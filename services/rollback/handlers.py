"""Rollback's handlers: follow verifications, and order a rollback when one fails or is requested."""

import asyncpg

from services.rollback import repository
from services.rollback.domain import VerifiedRelease, choose_target, rolls_back_after_failure
from shared.events import (DeploymentFailed, EnvironmentPruned, Event, EventData, RollbackCompleted,
                           RollbackFailed, RollbackOrdered, RollbackRequested, VerificationFailed,
                           VerificationPassed)
from shared.runtime import ServiceRuntime


class RollbackHandlers:
    """Keeps the last known good release per environment and returns to it when asked."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    async def handle(self, event: Event) -> None:
        """Record the fact and emit the rollback order or outcome it calls for, in one transaction."""
        if not isinstance(event.data, VerificationPassed | VerificationFailed | DeploymentFailed | RollbackRequested
                          | EnvironmentPruned):
            return  # no state to change, so no transaction (and no inbox row) is needed

        async def work(conn: asyncpg.Connection) -> list[Event]:
            return self.runtime.events(await self._apply(conn, event), event)

        await self.runtime.once(event, work)

    async def _apply(self, conn: asyncpg.Connection, event: Event) -> list[EventData]:
        data = event.data
        match data:
            case VerificationPassed():
                release = VerifiedRelease(
                    data.version, data.digest, dict(data.config), data.config_version, data.driver, data.location,
                    data.replicas, None if data.resources is None else data.resources.model_dump(mode="json"))
                await repository.add_verified(conn, data.service, data.env, release)
                await repository.set_current(conn, data.service, data.env, data.version, data.digest,
                                             data.config_version, "verified")
                if data.purpose == "rollback":
                    return [RollbackCompleted(service=data.service, rollback_id=data.rollback_id, env=data.env,
                                              version=data.version, digest=data.digest)]
            case VerificationFailed() | DeploymentFailed():
                await repository.set_current(conn, data.service, data.env, data.version, data.digest,
                                             data.config_version, "failed")
                if data.purpose == "rollback":
                    return [RollbackFailed(service=data.service, rollback_id=data.rollback_id, env=data.env,
                                           reason=f"the rollback release failed: {data.reason}")]
                if not rolls_back_after_failure(data.purpose, getattr(data, "superseded_by", None) is not None):
                    return []
                reason = f"{data.version} failed in {data.env}: {data.reason}"
                return await self._order(conn, event.id, data.service, data.env, reason, "rollback-service")
            case EnvironmentPruned():
                await repository.forget(conn, data.service, data.env)
            case RollbackRequested():
                reason = data.reason or f"requested by {data.requested_by}"
                return await self._order(conn, event.id, data.service, data.env, reason, data.requested_by)
        return []

    async def _order(self, conn: asyncpg.Connection, rollback_id: str, service: str, env: str, reason: str,
                     requested_by: str) -> list[EventData]:
        """Order the deployment of the last verified release that is not the current one."""
        now = await repository.current(conn, service, env)
        target = choose_target(
            await repository.history(conn, service, env), (now["digest"], now["config_version"]) if now else None
        )
        if target is None:
            return [RollbackFailed(service=service, rollback_id=rollback_id, env=env,
                                   reason=f"no earlier verified release in {env} to return to")]
        return [RollbackOrdered(
            service=service, rollback_id=rollback_id, env=env, version=target.version, digest=target.digest,
            config=target.config, config_version=target.config_version, driver=target.driver,
            location=target.location, replicas=target.replicas, resources=target.resources,
            from_version=now["version"] if now else None, reason=reason, requested_by=requested_by,
        )]
