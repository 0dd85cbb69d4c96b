"""Rollback's state behind a Protocol: every release verified per environment, and what each runs.

`PostgresRepository` keeps it in the service's schema (tables verified_releases, current_releases), on the
connection of the handler's transaction; `MemoryRepository` keeps it in dicts, for fast tests of the handler.
One contract suite runs on both (tests/e2e/test_rollback_repository.py).
"""

import json
from typing import Protocol

import asyncpg

from services.rollback.domain import Current, Decision, Known, VerifiedRelease


class Repository(Protocol):
    """What rollback keeps per (service, environment)."""

    async def known(self, service: str, env: str) -> Known:
        """The environment's verified releases (newest first) and what runs there."""

    async def add_verified(self, service: str, env: str, release: VerifiedRelease) -> None:
        """Append a verified release to the environment's history."""

    async def set_current(self, service: str, env: str, current: Current) -> None:
        """What the environment runs now."""

    async def forget(self, service: str, env: str) -> None:
        """The environment was pruned: nothing runs there and nothing can be returned to."""


async def save(repository: Repository, service: str, env: str, decision: Decision) -> None:
    """Keep what a decision changes."""
    if decision.forget:
        await repository.forget(service, env)
    if decision.verified is not None:
        await repository.add_verified(service, env, decision.verified)
    if decision.current is not None:
        await repository.set_current(service, env, decision.current)


class PostgresRepository:
    """Rollback's tables, on one connection (the handler's transaction)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def known(self, service: str, env: str) -> Known:
        rows = await self.conn.fetch(
            "select version, digest, config, config_version, driver, location, replicas, resources "
            "from verified_releases where service = $1 and env = $2 order by seq desc", service, env)
        history = tuple(VerifiedRelease(r["version"], r["digest"], json.loads(r["config"]), r["config_version"],
                                        r["driver"], r["location"], r["replicas"],
                                        None if r["resources"] is None else json.loads(r["resources"]))
                        for r in rows)
        now = await self.conn.fetchrow("select version, digest, config_version, state from current_releases "
                                       "where service = $1 and env = $2", service, env)
        return Known(history, Current(**dict(now)) if now else None)

    async def add_verified(self, service: str, env: str, release: VerifiedRelease) -> None:
        await self.conn.execute(
            "insert into verified_releases (service, env, version, digest, config, config_version, driver, "
            "location, replicas, resources) values ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10::jsonb)",
            service, env, release.version, release.digest, json.dumps(release.config), release.config_version,
            release.driver, release.location, release.replicas,
            None if release.resources is None else json.dumps(release.resources))

    async def set_current(self, service: str, env: str, current: Current) -> None:
        await self.conn.execute(
            "insert into current_releases (service, env, version, digest, config_version, state) "
            "values ($1, $2, $3, $4, $5, $6) on conflict (service, env) do update set version = excluded.version, "
            "digest = excluded.digest, config_version = excluded.config_version, state = excluded.state",
            service, env, current.version, current.digest, current.config_version, current.state)

    async def forget(self, service: str, env: str) -> None:
        for table in ("verified_releases", "current_releases"):
            await self.conn.execute(f"delete from {table} where service = $1 and env = $2", service, env)


class MemoryRepository:
    """Rollback's state in dicts: the same behaviour as the tables, for fast tests."""

    def __init__(self) -> None:
        self.history: dict[tuple[str, str], list[VerifiedRelease]] = {}
        self.current: dict[tuple[str, str], Current] = {}

    async def known(self, service: str, env: str) -> Known:
        return Known(tuple(reversed(self.history.get((service, env), []))), self.current.get((service, env)))

    async def add_verified(self, service: str, env: str, release: VerifiedRelease) -> None:
        self.history.setdefault((service, env), []).append(release)

    async def set_current(self, service: str, env: str, current: Current) -> None:
        self.current[(service, env)] = current

    async def forget(self, service: str, env: str) -> None:
        self.history.pop((service, env), None)
        self.current.pop((service, env), None)
