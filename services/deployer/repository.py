"""Deployer's tables: one slot per (service, environment), the deployments, each driver call, and what was promoted
where with its drift (services/deployer/drift_checks.py)."""

import json
import socket
from collections.abc import Mapping
from typing import Any, Protocol

import asyncpg

from services.deployer.domain import Target


def deploy_lock(service: str, env: str) -> str:
    """The advisory-lock key held while anything changes what runs in an environment (one at a time)."""
    return f"deploy:{service}:{env}"


async def slot(conn: asyncpg.Connection, service: str, env: str, port_base: int) -> asyncpg.Record:
    """The environment's slot, allocating it a port of its own the first time."""
    row = await conn.fetchrow("select * from slots where service = $1 and env = $2", service, env)
    if row is not None:
        return row
    return await conn.fetchrow(
        "insert into slots (service, env, port) values ($1, $2, $3) "
        "on conflict (service, env) do update set service = excluded.service returning *",
        service, env, await free_port(conn, port_base),
    )


async def route(conn: asyncpg.Connection, service: str, env: str,
                port_base: int) -> tuple[asyncpg.Record, dict[str, asyncpg.Record]]:
    """A routed environment's route (the router's port, the live lane) and its two lanes, allocated once."""
    row = await conn.fetchrow("select * from routes where service = $1 and env = $2", service, env)
    if row is None:
        await conn.execute("insert into routes (service, env, port) values ($1, $2, $3) on conflict do nothing",
                           service, env, await free_port(conn, port_base))
        for lane in ("blue", "green"):
            await conn.execute("insert into lanes (service, env, lane, port) values ($1, $2, $3, $4) "
                               "on conflict do nothing", service, env, lane, await free_port(conn, port_base))
        row = await conn.fetchrow("select * from routes where service = $1 and env = $2", service, env)
    lanes = await conn.fetch("select * from lanes where service = $1 and env = $2", service, env)
    return row, {lane["lane"]: lane for lane in lanes}


async def is_routed(conn: asyncpg.Connection, service: str, env: str) -> bool:
    """The environment is behind the router (it was deployed blue/green or canary before)."""
    return bool(await conn.fetchval("select true from routes where service = $1 and env = $2", service, env))


APP_PORTS = 12_000
"""Ports an app may be given, from the base up (20000-31999 by default: every environment holds one, a `noop` one
too, so the range is sized for thousands of services)."""


async def free_port(conn: asyncpg.Connection, port_base: int) -> int:
    """The lowest port from `port_base` up that no slot, route or lane holds and nothing on this host listens on
    (a port freed by a pruned environment is given again; allocation is serialised by a transaction lock)."""
    await conn.execute("select pg_advisory_xact_lock(hashtext('deployer:ports'))")
    held = {row["port"] for row in await conn.fetch(
        "select port from slots union select port from routes union select port from lanes")}
    for port in range(port_base, port_base + APP_PORTS):
        if port not in held and not listened_on(port):
            return port
    raise RuntimeError(f"no free app port in {port_base}-{port_base + APP_PORTS - 1}: every one is held or in use")


def listened_on(port: int) -> bool:
    """Something on this host already listens on 127.0.0.1:`port` (another program: an app given it would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def switch(conn: asyncpg.Connection, target: Target, lane: str, pid: int, retire: str | None,
                 retire_after: float) -> None:
    """`lane` runs the release and takes the traffic; the previous lane retires after `retire_after` s."""
    await conn.execute("update routes set live = $3, canary_weight = 0, updated_at = now() "
                       "where service = $1 and env = $2", target.service, target.env, lane)
    await set_lane(conn, target, lane, pid, "live")
    if retire is not None:
        await conn.execute(
            "update lanes set state = 'warm', retire_at = now() + make_interval(secs => $4), updated_at = now() "
            "where service = $1 and env = $2 and lane = $3 and pid is not null",
            target.service, target.env, retire, retire_after)


async def set_lane(conn: asyncpg.Connection, target: Target, lane: str, pid: int | None, state: str) -> None:
    """Record what runs in a lane (pid None: nothing)."""
    await conn.execute(
        "update lanes set pid = $4, version = $5, digest = $6, config_version = $7, state = $8, retire_at = null, "
        "location = $9, updated_at = now() where service = $1 and env = $2 and lane = $3",
        target.service, target.env, lane, pid, target.version, target.digest, target.config_version, state,
        target.location)


async def due_for_retirement(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Warm lanes whose time is up (never the live one)."""
    return await conn.fetch(
        "select l.* from lanes l join routes r using (service, env) "
        "where l.retire_at <= now() and l.pid is not null and l.lane is distinct from r.live")


async def retired(conn: asyncpg.Connection, service: str, env: str, lane: str) -> None:
    """The lane's process was stopped."""
    await conn.execute("update lanes set pid = null, state = 'retired', retire_at = null, updated_at = now() "
                       "where service = $1 and env = $2 and lane = $3", service, env, lane)


async def running_releases(conn: asyncpg.Connection, service: str) -> dict[str, asyncpg.Record]:
    """{env: the verified release that serves it (version, digest, config_version, location)} for a service."""
    rows = await conn.fetch(
        "select env, version, digest, config_version, location from slots where service = $1 "
        "and state = 'verified' "
        "and not exists (select 1 from routes r where r.service = slots.service and r.env = slots.env) "
        "union all select l.env, l.version, l.digest, l.config_version, l.location from lanes l "
        "join routes r on r.service = l.service and r.env = l.env and r.live = l.lane where l.service = $1 "
        "and l.version is not null",
        service)
    return {row["env"]: row for row in rows}


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
        "state = $8, location = $9, updated_at = now() where service = $1 and env = $2",
        target.service, target.env, pid, target.version, target.digest, target.config_version, path, state,
        target.location,
    )


async def serving(conn: asyncpg.Connection, service: str, env: str) -> asyncpg.Record | None:
    """The release that serves the environment (version, digest), verified or not; None if none."""
    return await conn.fetchrow(
        "select l.version, l.digest from lanes l join routes r on r.service = l.service and r.env = l.env "
        "and r.live = l.lane where l.service = $1 and l.env = $2 "
        "union all select version, digest from slots where service = $1 and env = $2 and version is not null "
        "and not exists (select 1 from routes r where r.service = $1 and r.env = $2) limit 1",
        service, env)


async def forget(conn: asyncpg.Connection, service: str, env: str) -> None:
    """The environment no longer exists: its slot, route and lanes go (their ports are free again), and what was
    promoted there with its drift."""
    for table in ("lanes", "routes", "slots", "promoted", "drift"):
        await conn.execute(f"delete from {table} where service = $1 and env = $2", service, env)


async def ran_images(conn: asyncpg.Connection, service: str, env: str) -> bool:
    """An image ran in the environment (its slot or a lane names a location): the container driver has
    something there to stop (a stack without a container engine never asks it)."""
    return bool(await conn.fetchval(
        "select exists (select 1 from slots where service = $1 and env = $2 and location is not null) "
        "or exists (select 1 from lanes where service = $1 and env = $2 and location is not null)", service, env))


async def save_promoted(conn: asyncpg.Connection, target: Target, slot: str, port: int, routed: bool) -> None:
    """`target` was verified in `slot`: from now on it is what the environment should run (the drift checks'
    reference, and what a restore redeploys)."""
    resources = None if target.resources is None else json.dumps(target.resources.model_dump(mode="json"))
    await conn.execute(
        "insert into promoted (service, env, slot, port, deployment_id, version, digest, config, config_version, "
        "driver, location, replicas, resources, routed, state, verified_at) "
        "values ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13::jsonb, $14, 'verified', now()) "
        "on conflict (service, env) do update set slot = excluded.slot, port = excluded.port, "
        "deployment_id = excluded.deployment_id, version = excluded.version, digest = excluded.digest, "
        "config = excluded.config, config_version = excluded.config_version, driver = excluded.driver, "
        "location = excluded.location, replicas = excluded.replicas, resources = excluded.resources, "
        "routed = excluded.routed, state = 'verified', verified_at = now()",
        target.service, target.env, slot, port, target.deployment_id, target.version, target.digest,
        json.dumps(target.config), target.config_version, target.driver, target.location, target.replicas,
        resources, routed)


async def promoted_replaced(conn: asyncpg.Connection, service: str, env: str) -> None:
    """A deployment replaced what was promoted and failed: nothing is compared until one is verified again."""
    await conn.execute("update promoted set state = 'failed' where service = $1 and env = $2", service, env)


async def promoted(conn: asyncpg.Connection, service: str, env: str | None = None) -> list[asyncpg.Record]:
    """What was promoted into the service's environments (or one), with each one's drift and on_drift."""
    return await conn.fetch(
        f"{_PROMOTED} where p.service = $1 and ($2::text is null or p.env = $2) order by p.env", service, env)


async def drift_candidates(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Verified environments with something to compare (not noop) and no deployment in flight, least recently
    checked first."""
    return await conn.fetch(
        f"{_PROMOTED} where p.state = 'verified' and p.driver <> 'noop' and not exists (select 1 from deployments x "
        "where x.service = p.service and x.env = p.env and x.status = 'started') "
        "order by d.checked_at nulls first, p.service, p.env limit $1", limit)


_PROMOTED = (
    "select p.*, d.generation, d.differences, d.detected_id, d.detected, d.restore_owed, d.checked_at, "
    "coalesce(pol.on_drift, 'report') as on_drift, exists (select 1 from deployments x where x.service = p.service "
    "and x.env = p.env and x.status = 'started') as in_flight from promoted p "
    "left join drift d on d.service = p.service and d.env = p.env "
    "left join drift_policies pol on pol.service = p.service and pol.env = p.env ")


async def in_flight(conn: asyncpg.Connection, service: str, env: str) -> bool:
    """A deployment into the environment has started and not finished."""
    return bool(await conn.fetchval("select exists (select 1 from deployments where service = $1 and env = $2 "
                                    "and status = 'started')", service, env))


async def drift(conn: asyncpg.Connection, service: str, env: str) -> asyncpg.Record | None:
    """The environment's drift row, if a drift was ever found there."""
    return await conn.fetchrow("select * from drift where service = $1 and env = $2", service, env)


async def save_drift(conn: asyncpg.Connection, service: str, env: str, generation: int,
                     differences: list[str] | None, detected_id: str | None, detected: dict | None,
                     restore_owed: bool) -> None:
    """Record what differs now (None: in sync), the drift.detected of this generation, and whether a restore
    is owed."""
    await conn.execute(
        "insert into drift (service, env, generation, differences, detected_id, detected, restore_owed, checked_at) "
        "values ($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, now()) on conflict (service, env) do update set "
        "generation = excluded.generation, differences = excluded.differences, detected_id = excluded.detected_id, "
        "detected = excluded.detected, restore_owed = excluded.restore_owed, checked_at = now()",
        service, env, generation, None if differences is None else json.dumps(differences), detected_id,
        None if detected is None else json.dumps(detected), restore_owed)


async def checked(conn: asyncpg.Connection, environments: list[tuple[str, str]]) -> None:
    """The environments, (service, env), were checked just now (and found as recorded)."""
    await conn.executemany("insert into drift (service, env, checked_at) values ($1, $2, now()) "
                           "on conflict (service, env) do update set checked_at = now()", environments)


async def drift_settled(conn: asyncpg.Connection, service: str, env: str, *, resolved: bool) -> None:
    """What serves the environment changed: no restore is owed any more; `resolved`: the drift is over."""
    await conn.execute("update drift set restore_owed = false, differences = case when $3 then null "
                       "else differences end where service = $1 and env = $2", service, env, resolved)


async def owed_restores(conn: asyncpg.Connection, limit: int = 20) -> list[asyncpg.Record]:
    """Drifted environments whose restore has not been done (a restore interrupted by a crash, or just found)."""
    return await conn.fetch(
        f"{_PROMOTED} where d.restore_owed and d.differences is not null and p.state = 'verified' "
        "order by d.checked_at limit $1", limit)


async def set_drift_policies(conn: asyncpg.Connection, service: str, policies: dict[str, str]) -> None:
    """on_drift of each environment of the service's pipeline as last applied (the others are forgotten)."""
    await conn.execute("delete from drift_policies where service = $1 and not (env = any($2::text[]))",
                       service, list(policies))
    await conn.executemany(
        "insert into drift_policies (service, env, on_drift) values ($1, $2, $3) "
        "on conflict (service, env) do update set on_drift = excluded.on_drift",
        [(service, env, on_drift) for env, on_drift in policies.items()])


Row = Mapping[str, Any]


class Deployments(Protocol):
    """What the deployer's handlers keep and read of its deployments: the environments' slots, routes and lanes
    (with the ports they hold), the deployments opened and finished, the driver starts, and what was promoted
    where. `PostgresDeployments`: the tables above; `MemoryDeployments`: dicts with the tables' rules, for fast
    tests. One contract suite runs on both (tests/e2e/test_deployer_repository.py). Drift and canaries keep
    their own tables (drift_checks.py, canaries.py)."""

    async def slot(self, service: str, env: str, port_base: int) -> Row: ...
    async def route(self, service: str, env: str, port_base: int) -> tuple[Row, dict[str, Row]]: ...
    async def is_routed(self, service: str, env: str) -> bool: ...
    async def switch(self, target: Target, lane: str, pid: int, retire: str | None, retire_after: float) -> None: ...
    async def set_lane(self, target: Target, lane: str, pid: int | None, state: str) -> None: ...
    async def claim(self, target: Target) -> bool: ...
    async def record_start(self, target: Target) -> None: ...
    async def starts(self, service: str, env: str) -> int: ...
    async def finish(self, target: Target, pid: int | None, path: str, state: str, reason: str | None, *,
                     slot_changed: bool = True) -> None: ...
    async def in_flight(self, service: str, env: str) -> bool: ...
    async def serving(self, service: str, env: str) -> Row | None: ...
    async def running_releases(self, service: str) -> dict[str, Row]: ...
    async def save_promoted(self, target: Target, slot: str, port: int, routed: bool) -> None: ...
    async def promoted_replaced(self, service: str, env: str) -> None: ...
    async def promoted_release(self, service: str, env: str) -> Row | None: ...
    async def ran_images(self, service: str, env: str) -> bool: ...
    async def forget(self, service: str, env: str) -> None: ...


class PostgresDeployments:
    """`Deployments` on the deployer's tables, through the connection the caller holds (its transaction, if any)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def slot(self, service: str, env: str, port_base: int) -> Row:
        return await slot(self.conn, service, env, port_base)

    async def route(self, service: str, env: str, port_base: int) -> tuple[Row, dict[str, Row]]:
        return await route(self.conn, service, env, port_base)

    async def is_routed(self, service: str, env: str) -> bool:
        return await is_routed(self.conn, service, env)

    async def switch(self, target: Target, lane: str, pid: int, retire: str | None, retire_after: float) -> None:
        await switch(self.conn, target, lane, pid, retire, retire_after)

    async def set_lane(self, target: Target, lane: str, pid: int | None, state: str) -> None:
        await set_lane(self.conn, target, lane, pid, state)

    async def claim(self, target: Target) -> bool:
        return await claim(self.conn, target)

    async def record_start(self, target: Target) -> None:
        await record_start(self.conn, target)

    async def starts(self, service: str, env: str) -> int:
        return await self.conn.fetchval("select count(*) from driver_calls where service = $1 and env = $2 "
                                        "and action = 'start'", service, env)

    async def finish(self, target: Target, pid: int | None, path: str, state: str, reason: str | None, *,
                     slot_changed: bool = True) -> None:
        await finish(self.conn, target, pid, path, state, reason, slot_changed=slot_changed)

    async def in_flight(self, service: str, env: str) -> bool:
        return await in_flight(self.conn, service, env)

    async def serving(self, service: str, env: str) -> Row | None:
        return await serving(self.conn, service, env)

    async def running_releases(self, service: str) -> dict[str, Row]:
        return await running_releases(self.conn, service)

    async def save_promoted(self, target: Target, slot: str, port: int, routed: bool) -> None:
        await save_promoted(self.conn, target, slot, port, routed)

    async def promoted_replaced(self, service: str, env: str) -> None:
        await promoted_replaced(self.conn, service, env)

    async def promoted_release(self, service: str, env: str) -> Row | None:
        rows = await promoted(self.conn, service, env)
        return rows[0] if rows else None

    async def ran_images(self, service: str, env: str) -> bool:
        return await ran_images(self.conn, service, env)

    async def forget(self, service: str, env: str) -> None:
        await forget(self.conn, service, env)


class MemoryDeployments:
    """`Deployments` in dicts, with the tables' rules: a port is held by one slot, route or lane, the lowest from
    `port_base` up that none holds (no host to ask what listens); a deployment is opened once; a routed environment is served by
    its live lane, any other by its slot; what was promoted is kept once per environment, the last one winning."""

    def __init__(self) -> None:
        self.slots: dict[tuple[str, str], dict] = {}
        self.routes: dict[tuple[str, str], dict] = {}
        self.lanes: dict[tuple[str, str, str], dict] = {}
        self.deployments: dict[str, dict] = {}
        self.started: list[tuple[str, str, str]] = []
        self.promoted: dict[tuple[str, str], dict] = {}

    def _free_port(self, port_base: int) -> int:
        held = {row["port"] for table in (self.slots, self.routes, self.lanes) for row in table.values()}
        return next(port for port in range(port_base, port_base + APP_PORTS) if port not in held)

    async def slot(self, service: str, env: str, port_base: int) -> Row:
        if (service, env) not in self.slots:
            self.slots[(service, env)] = {"service": service, "env": env, "port": self._free_port(port_base),
                                          "pid": None, "version": None, "digest": None, "config_version": None,
                                          "artifact_path": None, "state": "empty", "location": None}
        return dict(self.slots[(service, env)])

    async def route(self, service: str, env: str, port_base: int) -> tuple[Row, dict[str, Row]]:
        if (service, env) not in self.routes:
            self.routes[(service, env)] = {"service": service, "env": env, "port": self._free_port(port_base),
                                           "live": None, "canary_weight": 0}
            for lane in ("blue", "green"):
                self.lanes[(service, env, lane)] = {
                    "service": service, "env": env, "lane": lane, "port": self._free_port(port_base), "pid": None,
                    "version": None, "digest": None, "config_version": None, "state": "empty", "retire_at": None,
                    "location": None}
        lanes = {lane: dict(self.lanes[(service, env, lane)]) for lane in ("blue", "green")}
        return dict(self.routes[(service, env)]), lanes

    async def is_routed(self, service: str, env: str) -> bool:
        return (service, env) in self.routes

    async def switch(self, target: Target, lane: str, pid: int, retire: str | None, retire_after: float) -> None:
        self.routes[(target.service, target.env)].update(live=lane, canary_weight=0)
        await self.set_lane(target, lane, pid, "live")
        if retire is not None and self.lanes[(target.service, target.env, retire)]["pid"] is not None:
            self.lanes[(target.service, target.env, retire)].update(state="warm", retire_at=retire_after)

    async def set_lane(self, target: Target, lane: str, pid: int | None, state: str) -> None:
        row = self.lanes.get((target.service, target.env, lane))
        if row is not None:
            row.update(pid=pid, version=target.version, digest=target.digest, config_version=target.config_version,
                       state=state, retire_at=None, location=target.location)

    async def claim(self, target: Target) -> bool:
        if target.deployment_id in self.deployments:
            return False
        self.deployments[target.deployment_id] = {"service": target.service, "env": target.env,
                                                  "status": "started", "reason": None}
        return True

    async def record_start(self, target: Target) -> None:
        self.started.append((target.service, target.env, target.digest))

    async def starts(self, service: str, env: str) -> int:
        return sum(1 for s, e, _ in self.started if (s, e) == (service, env))

    async def finish(self, target: Target, pid: int | None, path: str, state: str, reason: str | None, *,
                     slot_changed: bool = True) -> None:
        if target.deployment_id in self.deployments:
            self.deployments[target.deployment_id].update(status=state, reason=reason)
        if slot_changed and (target.service, target.env) in self.slots:
            self.slots[(target.service, target.env)].update(
                pid=pid, version=target.version, digest=target.digest, config_version=target.config_version,
                artifact_path=path, state=state, location=target.location)

    async def in_flight(self, service: str, env: str) -> bool:
        return any(row["status"] == "started" and (row["service"], row["env"]) == (service, env)
                   for row in self.deployments.values())

    def _live_lane(self, service: str, env: str) -> dict | None:
        route = self.routes.get((service, env))
        return None if route is None or route["live"] is None else self.lanes[(service, env, route["live"])]

    async def serving(self, service: str, env: str) -> Row | None:
        if (service, env) in self.routes:
            lane = self._live_lane(service, env)
            return None if lane is None else {"version": lane["version"], "digest": lane["digest"]}
        slot = self.slots.get((service, env))
        return None if slot is None or slot["version"] is None else {"version": slot["version"],
                                                                      "digest": slot["digest"]}

    async def running_releases(self, service: str) -> dict[str, Row]:
        fields = ("env", "version", "digest", "config_version", "location")
        found: dict[str, Row] = {}
        for (s, env), slot in self.slots.items():
            if s == service and slot["state"] == "verified" and (s, env) not in self.routes:
                found[env] = {name: slot[name] for name in fields}
        for s, env in self.routes:
            lane = self._live_lane(s, env) if s == service else None
            if lane is not None and lane["version"] is not None:
                found[env] = {name: lane[name] for name in fields}
        return found

    async def save_promoted(self, target: Target, slot: str, port: int, routed: bool) -> None:
        self.promoted[(target.service, target.env)] = {
            "service": target.service, "env": target.env, "slot": slot, "port": port,
            "deployment_id": target.deployment_id, "version": target.version, "digest": target.digest,
            "config": dict(target.config), "config_version": target.config_version, "driver": target.driver,
            "location": target.location, "replicas": target.replicas, "routed": routed, "state": "verified",
            "resources": None if target.resources is None else target.resources.model_dump(mode="json")}

    async def promoted_replaced(self, service: str, env: str) -> None:
        if (service, env) in self.promoted:
            self.promoted[(service, env)]["state"] = "failed"

    async def promoted_release(self, service: str, env: str) -> Row | None:
        row = self.promoted.get((service, env))
        return None if row is None else dict(row)

    async def ran_images(self, service: str, env: str) -> bool:
        slot = self.slots.get((service, env))
        return (slot is not None and slot["location"] is not None) or any(
            row["location"] is not None for (s, e, _), row in self.lanes.items() if (s, e) == (service, env))

    async def forget(self, service: str, env: str) -> None:
        for table in (self.slots, self.routes, self.promoted):
            table.pop((service, env), None)
        for lane in ("blue", "green"):
            self.lanes.pop((service, env, lane), None)
