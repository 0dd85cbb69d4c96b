"""Rollback's tables: every release verified per environment, and what each environment runs."""

import json

import asyncpg

from services.rollback.domain import VerifiedRelease


async def add_verified(conn: asyncpg.Connection, service: str, env: str, release: VerifiedRelease) -> None:
    """Append a verified release to the environment's history."""
    await conn.execute(
        "insert into verified_releases (service, env, version, digest, config, config_version, driver, location, "
        "replicas, resources) values ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10::jsonb)",
        service, env, release.version, release.digest, json.dumps(release.config), release.config_version,
        release.driver, release.location, release.replicas,
        None if release.resources is None else json.dumps(release.resources),
    )


async def history(conn: asyncpg.Connection, service: str, env: str) -> list[VerifiedRelease]:
    """Verified releases of the environment, newest first."""
    rows = await conn.fetch(
        "select version, digest, config, config_version, driver, location, replicas, resources "
        "from verified_releases where service = $1 and env = $2 order by seq desc",
        service, env,
    )
    return [VerifiedRelease(r["version"], r["digest"], json.loads(r["config"]), r["config_version"], r["driver"],
                            r["location"], r["replicas"], None if r["resources"] is None else json.loads(r["resources"]))
            for r in rows]


async def set_current(conn: asyncpg.Connection, service: str, env: str, version: str, digest: str,
                      config_version: str, state: str) -> None:
    """What the environment runs now, and whether it was verified."""
    await conn.execute(
        "insert into current_releases (service, env, version, digest, config_version, state) "
        "values ($1, $2, $3, $4, $5, $6) on conflict (service, env) do update set version = excluded.version, "
        "digest = excluded.digest, config_version = excluded.config_version, state = excluded.state",
        service, env, version, digest, config_version, state,
    )


async def current(conn: asyncpg.Connection, service: str, env: str) -> asyncpg.Record | None:
    """The environment's current release, if anything was deployed there."""
    return await conn.fetchrow(
        "select version, digest, config_version, state from current_releases where service = $1 and env = $2",
        service, env,
    )


async def forget(conn: asyncpg.Connection, service: str, env: str) -> None:
    """The environment was pruned: nothing runs there and nothing can be returned to."""
    for table in ("verified_releases", "current_releases"):
        await conn.execute(f"delete from {table} where service = $1 and env = $2", service, env)
