"""Read side for the CLI: the ledger's projections and entries (the ledger owns them; we only read)."""

import json

import asyncpg

from shared.credentials import READER, database_dsn, redacted
from cli.errors import CliError
from services.ledger.chain import first_broken_link
from shared.settings import Settings


class LedgerReader:
    """A short-lived connection to the ledger's schema."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> "LedgerReader":
        dsn = database_dsn(self.settings, READER)
        try:
            self.conn = await asyncpg.connect(dsn, server_settings={"search_path": "ledger"}, timeout=5)
        except (OSError, asyncpg.PostgresError) as error:
            raise CliError(f"cannot reach PostgreSQL at {redacted(dsn)} ({error}); "
                           "is the stack up? ./dev-stack up") from None
        if not await self.conn.fetchval("select to_regclass('ledger.entries') is not null"):
            raise CliError("the ledger has no data yet (is the ledger service running? ./dev-stack status)")
        return self

    async def __aexit__(self, *exc) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def services(self) -> list[str]:
        """Every service with an applied pipeline."""
        return [r["service"] for r in await self.conn.fetch("select service from pipelines order by service")]

    async def status(self, service: str) -> dict:
        """One entry per environment of the pipeline, with what runs there and what waits to enter."""
        envs = await self.conn.fetchval("select environments from pipelines where service = $1", service)
        if envs is None:
            raise CliError(f"unknown service {service!r}: no pipeline applied (promote pipeline apply FILE)")
        rows = {r["env"]: r for r in await self.conn.fetch("select * from environments where service = $1", service)}
        waiting = await self.conn.fetch(
            "select env, version, outcome, reasons from waiting where service = $1 order by version", service
        )
        result: dict = {"service": service, "environments": {}}
        for env in json.loads(envs):
            row = rows.get(env)
            entry = {
                "version": row["version"] if row else None,
                "digest": row["digest"] if row else None,
                "state": row["state"] if row else "empty",
                "config_version": row["config_version"] if row else None,
                "waiting": [
                    {"version": w["version"], "outcome": w["outcome"], "reasons": json.loads(w["reasons"])}
                    for w in waiting if w["env"] == env
                ],
            }
            result["environments"][env] = entry
        return result

    async def history(self, service: str, env: str | None, limit: int) -> list[asyncpg.Record]:
        """The service's ledger entries, oldest first (the last `limit`)."""
        rows = await self.conn.fetch(
            "select seq, event_id, type, version, env, event_time, canonical from entries "
            "where service = $1 and ($2::text is null or env = $2) order by seq desc limit $3",
            service, env, limit,
        )
        return list(reversed(rows))

    async def audit(self, service: str, version: str) -> list[asyncpg.Record]:
        """Every entry about one release: build, gates, approvals, deployments, verifications, rollbacks."""
        return await self.conn.fetch(
            "select seq, event_id, type, version, env, event_time, canonical, hash from entries "
            "where service = $1 and version = $2 order by seq",
            service, version,
        )

    async def waiting(self, service: str, version: str, env: str) -> tuple[str, list[str]] | None:
        """(outcome, reasons) of a promotion held at an environment's gates, if the ledger has one."""
        row = await self.conn.fetchrow(
            "select outcome, reasons from waiting where service = $1 and version = $2 and env = $3",
            service, version, env,
        )
        return (row["outcome"], json.loads(row["reasons"])) if row else None

    async def author_and_digest(self, service: str, version: str) -> tuple[str, str] | None:
        """(author, digest) of a registered artifact."""
        row = await self.conn.fetchrow(
            "select author, digest from artifacts where service = $1 and version = $2", service, version
        )
        return (row["author"], row["digest"]) if row else None

    async def verify_chain(self) -> tuple[int, int | None]:
        """(entries checked, seq of the first entry that breaks the hash chain or None)."""
        rows = await self.conn.fetch("select seq, prev_hash, canonical, hash from entries order by seq")
        entries = [(r["seq"], r["prev_hash"], bytes(r["canonical"]), r["hash"]) for r in rows]
        return len(entries), first_broken_link(entries)
