"""Deployer's tables: one slot per (service, environment), the deployments, and each driver call."""

import asyncpg

from services.deployer.domain import Target


async def slot(conn: asyncpg.Connection, service: str, env: str, port_base: int) -> asyncpg.Record:
    """The environment's slot, allocating it a port of its own the first time."""
    row = await conn.fetchrow("select * from slots where service = $1 and env = $2", service, env)
    if row is not None:
        return row
    await conn.execute("select pg_advisory_xact_lock(hashtext('deployer:ports'))")
    return await conn.fetchrow(
        "insert into slots (service, env, port) "
        "values ($1, $2, greatest((select max(port) + 1 from slots), $3)) "
        "on conflict (service, env) do update set service = excluded.service returning *",
        service, env, port_base,
    )


async def claim(conn: asyncpg.Connection, target: Target) -> bool:
    """Open the deployment; False if it was opened before (a redelivered order)."""
    inserted = await conn.fetchval(
        "insert into deployments (deployment_id, service, env, version, digest, config_version, purpose, status) "
        "values ($1, $2, $3, $4, $5, $6, $7, 'started') on conflict do nothing returning true",
        target.deployment_id, target.service, target.env, target.version, target.digest,
        target.config_version, target.purpose,
    )
    return bool(inserted)


async def record_start(conn: asyncpg.Connection, target: Target) -> None:
    """Count a real driver start (tests compare these counts with the deployments)."""
    await conn.execute(
        "insert into driver_calls (service, env, digest, action) values ($1, $2, $3, 'start')",
        target.service, target.env, target.digest,
    )


async def finish(conn: asyncpg.Connection, target: Target, pid: int | None, path: str, state: str,
                 reason: str | None, *, slot_changed: bool = True) -> None:
    """Record the outcome in the deployment and, if what runs changed, in the slot."""
    await conn.execute(
        "update deployments set status = $2, reason = $3, finished_at = now() where deployment_id = $1",
        target.deployment_id, state, reason,
    )
    if not slot_changed:
        return
    await conn.execute(
        "update slots set pid = $3, version = $4, digest = $5, config_version = $6, artifact_path = $7, "
        "state = $8, updated_at = now() where service = $1 and env = $2",
        target.service, target.env, pid, target.version, target.digest, target.config_version, path, state,
    )
