"""Ledger's append-only entries: written under one lock so that the chain stays linear."""

import asyncpg

from services.ledger.chain import GENESIS, canonical_bytes, link
from shared.events import Event


async def append(conn: asyncpg.Connection, event: Event, topic: str) -> str | None:
    """Append the event to the chain; returns its hash, or None if the event is in the ledger already."""
    await conn.execute("select pg_advisory_xact_lock(hashtext('ledger:chain'))")
    if await conn.fetchval("select true from entries where event_id = $1", event.id):
        return None
    prev_hash = await conn.fetchval("select hash from entries order by seq desc limit 1") or GENESIS
    canonical = canonical_bytes(event.envelope.model_dump(mode="json", exclude_none=True))
    digest = link(prev_hash, canonical)
    data = event.data
    await conn.execute(
        "insert into entries (event_id, topic, type, service, version, env, event_time, canonical, prev_hash, hash) "
        "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        event.id, topic, event.envelope.type, data.service, getattr(data, "version", None),
        getattr(data, "env", None), event.envelope.time, canonical, prev_hash, digest,
    )
    return digest
