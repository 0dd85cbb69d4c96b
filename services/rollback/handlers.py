"""Rollback's handler: load what is known of the event's environment, decide (domain.decide), save, emit."""

from collections.abc import Callable

import asyncpg

from services.rollback import repository
from services.rollback.domain import decide
from services.rollback.repository import PostgresRepository, Repository
from shared.contracts.events import (DeploymentFailed, EnvironmentPruned, Event, EventData, RollbackRequested,
                           VerificationFailed, VerificationPassed)
from shared.platform.consumer import UnitOfWork
from shared.platform.runtime import ServiceRuntime

ACTS_ON = (VerificationPassed, VerificationFailed, DeploymentFailed, RollbackRequested, EnvironmentPruned)


async def apply(store: Repository, event: Event) -> list[EventData]:
    """One event against the state in `store`: the decision kept, the events it calls for returned."""
    data = event.data
    decision = decide(await store.known(data.service, data.env), event)
    await repository.save(store, data.service, data.env, decision)
    return list(decision.emit)


class RollbackHandlers:
    """Keeps the last known good release per environment and returns to it when asked."""

    def __init__(self, runtime: ServiceRuntime,
                 store: Callable[[asyncpg.Connection], Repository] = PostgresRepository) -> None:
        self.runtime = runtime
        self.store = store

    async def handle(self, event: Event, unit: UnitOfWork | None = None) -> None:
        """Record the fact and emit the rollback order or outcome it calls for, in one transaction."""
        if not isinstance(event.data, ACTS_ON):
            return  # no state to change, so no transaction (and no inbox row) is needed

        async def work(conn: asyncpg.Connection) -> list[Event]:
            return self.runtime.events(await apply(self.store(conn), event), event)

        await self.runtime.once(event, work, unit)
