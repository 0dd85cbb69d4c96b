"""Ledger's append-only entries: written under one lock so that the chain stays linear."""

import asyncpg

from shared.chain import GENESIS, canonical_bytes, link
from shared.platform.consumer import Position
from shared.contracts.events import Event

CHAIN_LOCK = "ledger:chain"


async def lock_chain(conn: asyncpg.Connection) -> None:
    """Hold the chain's lock until the transaction ends: one writer of the ledger at a time."""
    await conn.execute("select pg_advisory_xact_lock(hashtext($1))", CHAIN_LOCK)


async def append(conn: asyncpg.Connection, event: Event, topic: str, position: Position | None = None) -> str | None:
    """Append the event to the chain; returns its hash, or None if the event is in the ledger already."""
    await lock_chain(conn)
    if await conn.fetchval("select true from entries where topic = $1 and service = $2 and event_id = $3",
                           topic, event.data.service, event.id):
        return None
    prev_hash = await conn.fetchval("select hash from entries order by seq desc limit 1") or GENESIS
    canonical = canonical_bytes(event.envelope.model_dump(mode="json", exclude_none=True))
    digest = link(prev_hash, canonical)
    data = event.data
    # The record's position bounds a replay (cli/replay.py); absent when not called by the consumer.
    partition, offset = (position[1], position[2]) if position and position[0] == topic else (None, None)
    await conn.execute(
        "insert into entries (event_id, topic, type, service, version, env, event_time, canonical, prev_hash, hash, "
        "kafka_partition, kafka_offset) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        event.id, topic, event.envelope.type, data.service, getattr(data, "version", None),
        getattr(data, "env", None), event.envelope.time, canonical, prev_hash, digest, partition, offset,
    )
    return digest
