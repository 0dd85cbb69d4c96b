"""Rebuilding the ledger's projections from events, in a scratch schema, inside the caller's transaction.

Why a rebuild from the topics gives the live state: each projection table is fed by the
events of one topic only (pipelines <- promotion.pipelines, artifacts <- promotion.artifacts,
waiting <- promotion.gates, environments <- promotion.deployments; see projection.py), and a
row's key starts with the service, which is also the Kafka key of every event about that
service. So all the events that touch one row sit in one partition, where Kafka keeps their
order; folding each partition in offset order, in any interleaving with the others, applies
them to each row in the order the live ledger did.
"""

import asyncpg

from services.ledger import projection
from services.ledger.state import PROJECTION_TABLES
from shared.platform.consumer import TRANSIENT
from shared.contracts.events import Event

LIVE = "ledger"
SCRATCH = "ledger_rebuild"


async def recorded_positions(conn: asyncpg.Connection) -> dict[tuple[str, int], int]:
    """The last Kafka offset recorded in the ledger's entries, per (topic, partition)."""
    rows = await conn.fetch(
        "select topic, kafka_partition, max(kafka_offset) as last from entries "
        "where kafka_partition is not null group by topic, kafka_partition"
    )
    return {(row["topic"], row["kafka_partition"]): row["last"] for row in rows}


async def create_scratch(conn: asyncpg.Connection) -> None:
    """Empty copies of the projection tables in the scratch schema; later statements use it."""
    # `like … including all` copies columns, defaults, constraints and indexes from the live
    # table, so the projection DDL is written once (migrations) and the copy can never drift.
    # The scratch schema is the ledger's own (the stack creates it; the ledger may not create schemas).
    for table in PROJECTION_TABLES:
        await conn.execute(f"drop table if exists {SCRATCH}.{table}")
        await conn.execute(f"create table {SCRATCH}.{table} (like {LIVE}.{table} including all)")
    await conn.execute(f"set local search_path to {SCRATCH}")


async def fold(conn: asyncpg.Connection, events: list[Event]) -> int:
    """Apply events to the scratch projections, in order; returns how many failed (the ledger dead-letters those).

    Each table's changes keep their order; tables are independent (see above), so each table's
    runs of one statement go to PostgreSQL as one `executemany` (one round trip per run, not per event).
    """
    try:
        async with conn.transaction():  # one savepoint for the batch: a savepoint per event halves the speed
            changes = [change for event in events for change in projection.statements(event)]
            for sql, rows in runs_per_table(changes):
                await conn.executemany(sql, rows)
        return 0
    except TRANSIENT:
        raise
    except Exception:  # noqa: BLE001 - rare: redo the batch one by one to leave out only the failing events
        return sum([not await _fold_one(conn, event) for event in events])


def runs_per_table(changes: list[projection.Statement]) -> list[tuple[str, list[tuple]]]:
    """(SQL, rows) runs: the changes grouped by table, each table's in their order, consecutive equal SQL merged."""
    by_table: dict[str, list[tuple[str, list[tuple]]]] = {}
    for table, sql, args in changes:
        runs = by_table.setdefault(table, [])
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(args)
        else:
            runs.append((sql, [args]))
    return [run for runs in by_table.values() for run in runs]


async def _fold_one(conn: asyncpg.Connection, event: Event) -> bool:
    """Apply one event under its own savepoint; False if it failed, like it failed in the live ledger."""
    try:
        async with conn.transaction():
            await projection.apply(conn, event)
    except TRANSIENT:
        raise
    except Exception:  # noqa: BLE001 - mirrors the live ledger, whose failing events never reach the projections
        return False
    return True


async def replace_live(conn: asyncpg.Connection) -> None:
    """Replace the rows of the live projection tables with the scratch ones."""
    # delete, not truncate: readers (`promote status`) keep seeing the old rows until the commit.
    for table in PROJECTION_TABLES:
        await conn.execute(f"delete from {LIVE}.{table}")
        await conn.execute(f"insert into {LIVE}.{table} select * from {SCRATCH}.{table}")


async def drop_scratch(conn: asyncpg.Connection) -> None:
    """Remove the scratch tables and go back to the live schema."""
    await conn.execute(f"set local search_path to {LIVE}")
    for table in PROJECTION_TABLES:
        await conn.execute(f"drop table {SCRATCH}.{table}")
