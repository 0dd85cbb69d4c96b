"""The digest of the ledger's read projections: one sha256 that says whether two states are the same."""

import hashlib
import json
from datetime import UTC, datetime

import asyncpg

PROJECTION_TABLES: dict[str, tuple[str, ...]] = {
    "pipelines": ("service",),
    "environments": ("service", "env"),
    "waiting": ("service", "env", "version"),
    "artifacts": ("service", "version"),
}
"""Every projection table and its primary key (the definitions are in migrations/001_ledger.sql)."""

JSON_TYPES = {"json", "jsonb"}


def digest_rows(tables: dict[str, list[dict]]) -> str:
    """sha256 of the canonical JSON of `tables`: the same rows, in any order, always give the same digest."""
    # Sorted here, by primary key, rather than by the database: Python orders strings by code point,
    # whatever the database's collation, so the bytes are the same wherever this runs.
    canonical = {name: sorted(rows, key=_sort_key(name)) for name, rows in tables.items()}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


async def state_digest(conn: asyncpg.Connection) -> str:
    """`digest_rows` over every projection table in the connection's current search_path."""
    return digest_rows({name: await _rows(conn, name) for name in PROJECTION_TABLES})


async def _rows(conn: asyncpg.Connection, table: str) -> list[dict]:
    """A table's rows as dicts, with json/jsonb values parsed (asyncpg hands them over as text)."""
    statement = await conn.prepare(f"select * from {table}")
    parsed = {a.name for a in statement.get_attributes() if a.type.name in JSON_TYPES}
    return [{key: json.loads(value) if key in parsed and value is not None else value
             for key, value in row.items()} for row in await statement.fetch()]


def _sort_key(table: str):
    """Rows of a known table sort by primary key; any other table by its whole canonical row."""
    key = PROJECTION_TABLES.get(table)
    if key is None:
        return lambda row: json.dumps(row, sort_keys=True, default=_plain)
    return lambda row: tuple(row[column] for column in key)


def _plain(value: object) -> str:
    """JSON for what json cannot encode: a timestamp as ISO 8601 in UTC."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    raise TypeError(f"cannot put {type(value).__name__} into the state digest")
