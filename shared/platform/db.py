"""PostgreSQL access: one schema per service, migrations applied at start, retries on connect."""

from importlib import resources

import asyncpg
import structlog

from shared.platform.backoff import retrying

log = structlog.get_logger()

COMMON_MIGRATION_NAME = "000_common.sql"
COMMON_MIGRATION = """
create table if not exists processed_events (
    event_id text primary key,
    topic text not null,
    processed_at timestamptz not null default now()
);
create table if not exists outbox (
    seq bigserial primary key,
    event_id text not null unique,
    topic text not null,
    key text not null,
    payload bytea not null,
    created_at timestamptz not null default now(),
    published_at timestamptz
);
create index if not exists outbox_unpublished on outbox (seq) where published_at is null;
"""
# The inbox knows an event by (topic, service, id) and what it said (see shared/platform/inbox.py).
INBOX_BY_TOPIC_MIGRATION_NAME = "000_common_inbox.sql"
INBOX_BY_TOPIC_MIGRATION = """
alter table processed_events add column if not exists service text not null default '';
alter table processed_events add column if not exists content_digest text;
alter table processed_events drop constraint if exists processed_events_pkey;
alter table processed_events add constraint processed_events_pkey primary key (topic, service, event_id);
create index if not exists processed_events_by_id on processed_events (event_id);
"""


async def connect(dsn: str, schema: str, *, attempts: int = 30, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """Open a pool whose connections use `schema`, retrying with backoff while the server is down."""
    async for attempt in retrying((OSError, asyncpg.PostgresError), attempts, 0.2, event="database.unavailable"):
        with attempt:
            return await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, server_settings={"search_path": schema}
            )
    raise AssertionError("unreachable")


async def migrate(pool: asyncpg.Pool, schema: str, package: str) -> list[str]:
    """Create the schema and apply `package`'s migrations/*.sql once each, in name order."""
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        # One service instance migrates at a time.
        await conn.execute("select pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        # The stack creates each schema, owned by the service's role, which may not create schemas itself.
        if not await conn.fetchval("select true from pg_namespace where nspname = $1", schema):
            await conn.execute(f'create schema "{schema}"')
        await conn.execute(
            f'create table if not exists "{schema}".schema_migrations '
            "(name text primary key, applied_at timestamptz not null default now())"
        )
        done = {row["name"] for row in await conn.fetch(f'select name from "{schema}".schema_migrations')}
        scripts = [(COMMON_MIGRATION_NAME, COMMON_MIGRATION), (INBOX_BY_TOPIC_MIGRATION_NAME, INBOX_BY_TOPIC_MIGRATION),
                   *_package_migrations(package)]
        for name, sql in scripts:
            if name in done:
                continue
            await conn.execute(f'set local search_path to "{schema}"')
            await conn.execute(sql)
            await conn.execute(f'insert into "{schema}".schema_migrations (name) values ($1)', name)
            applied.append(name)
    return applied


def _package_migrations(package: str) -> list[tuple[str, str]]:
    """The (name, sql) pairs under `package`/migrations, sorted by name."""
    folder = resources.files(package) / "migrations"
    if not folder.is_dir():
        return []
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name, f.read_text()) for f in files]
