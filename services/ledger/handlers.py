"""Ledger's handler: append every event to the chain and fold it into the projections, atomically."""

import asyncpg

from services.ledger import projection, repository
from shared.contracts.events import Event
from shared.platform.consumer import UnitOfWork
from shared.platform.runtime import ServiceRuntime


class LedgerHandlers:
    """Records every event exactly once."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    async def handle(self, event: Event, unit: UnitOfWork | None = None) -> None:
        """Append (with the record's position, from the unit of work) and project in one transaction; the ledger
        emits nothing."""
        position = unit.position if unit is not None else None

        async def work(conn: asyncpg.Connection) -> list[Event]:
            if await repository.append(conn, event, event.data.topic, position) is not None:
                await projection.apply(conn, event)
            return []

        await self.runtime.once(event, work, unit)
