"""The read side: the ledger's projections and entries, read through the read-only `reader` role."""

import json

import asyncpg

from shared.bundle import assemble
from shared.chain import first_broken_link


class NotFound(Exception):
    """What was asked for does not exist; the message says what (the HTTP answer is 404)."""


class NotYet(Exception):
    """What was asked for needs something that comes soon (the ledger's next checkpoint): 409, try again."""


def entry(row: asyncpg.Record) -> dict:
    """A ledger entry as the API answers it: position, time, type, release, and the whole event."""
    body = {"seq": row["seq"], "time": row["event_time"].isoformat(), "type": row["type"],
            "version": row["version"], "env": row["env"], "event": json.loads(bytes(row["canonical"]))}
    if "hash" in row.keys():
        body["hash"] = row["hash"]
    return body


def _empty_cell() -> dict:
    """A grid cell of an environment nothing was deployed to and nothing waits at."""
    return {"version": None, "digest": None, "state": "empty", "since": None, "drift": None, "waiting": []}


class LedgerReader:
    """Queries over one connection of the reader's pool (the ledger owns the tables; this only reads)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def services(self) -> list[str]:
        """Every service with an applied pipeline."""
        return [r["service"] for r in await self.conn.fetch("select service from ledger.pipelines order by service")]

    async def environments(self, service: str) -> list[str]:
        """The environments of the service's pipeline, in order; NotFound without a pipeline."""
        envs = await self.conn.fetchval("select environments from ledger.pipelines where service = $1", service)
        if envs is None:
            raise NotFound(f"unknown service {service!r}: no pipeline applied (promote pipeline apply FILE)")
        return json.loads(envs)

    async def graph(self, service: str) -> list[dict]:
        """The pipeline's environments in order with what each comes after (PipelineDefinition.graph); a line for a
        pipeline projected before the ledger kept its graph. NotFound without a pipeline."""
        row = await self.conn.fetchrow("select environments, graph from ledger.pipelines where service = $1", service)
        if row is None:
            raise NotFound(f"unknown service {service!r}: no pipeline applied (promote pipeline apply FILE)")
        if row["graph"] is not None:
            return json.loads(row["graph"])
        names = json.loads(row["environments"])
        return [{"name": name, "after": names[index - 1:index], "require": "all"} for index, name in enumerate(names)]

    async def status(self, service: str) -> dict:
        """One entry per environment of the pipeline, with what runs there and what waits to enter, and the
        pipeline's graph."""
        graph = await self.graph(service)
        envs = [environment["name"] for environment in graph]
        rows = {r["env"]: r for r in await self.conn.fetch("select * from ledger.environments where service = $1",
                                                            service)}
        waiting = await self.conn.fetch(
            "select env, version, outcome, reasons from ledger.waiting where service = $1 order by version", service)
        moved = {r["version"]: {"tag": r["tag"], "now_names": r["tag_moved_to"]} for r in await self.conn.fetch(
            "select version, tag, tag_moved_to from ledger.artifacts where service = $1 and tag_moved_to is not null",
            service)}
        result: dict = {"service": service, "environments": {}, "graph": graph}
        for env in envs:
            row = rows.get(env)
            result["environments"][env] = {
                "version": row["version"] if row else None,
                "digest": row["digest"] if row else None,
                "state": row["state"] if row else "empty",
                "config_version": row["config_version"] if row else None,
                "tag_moved": moved.get(row["version"]) if row else None,
                "drift": json.loads(row["drift"]) if row and row.get("drift") else None,
                "waiting": [{"version": w["version"], "outcome": w["outcome"], "reasons": json.loads(w["reasons"])}
                            for w in waiting if w["env"] == env],
            }
        return result

    async def grid(self, search: str | None, limit: int, offset: int) -> dict:
        """Services × environments in three queries, for the console's grid: each service (those whose name
        contains `search`, in name order, `limit` from `offset`) with its environments in order and, per
        environment, what runs there (version, digest, state, since when, drift) and what waits at its gates."""
        total = await self.conn.fetchval(
            "select count(*) from ledger.pipelines where $1::text is null or position($1 in service) > 0", search)
        pipelines = await self.conn.fetch(
            "select service, environments from ledger.pipelines where $1::text is null or position($1 in service) > 0 "
            "order by service limit $2 offset $3", search, limit, offset)
        names = [row["service"] for row in pipelines]
        running = await self.conn.fetch(
            "select service, env, version, digest, state, updated_at, drift from ledger.environments "
            "where service = any($1::text[])", names)
        waiting = await self.conn.fetch(
            "select service, env, version, outcome, reasons from ledger.waiting where service = any($1::text[]) "
            "order by version", names)
        cells: dict[tuple[str, str], dict] = {}
        for row in running:
            cells[(row["service"], row["env"])] = {
                "version": row["version"], "digest": row["digest"], "state": row["state"],
                "since": row["updated_at"].isoformat(), "drift": json.loads(row["drift"]) if row["drift"] else None,
                "waiting": []}
        for row in waiting:
            cell = cells.setdefault((row["service"], row["env"]), _empty_cell())
            cell["waiting"].append({"version": row["version"], "outcome": row["outcome"],
                                    "reasons": json.loads(row["reasons"])})
        services = []
        for row in pipelines:
            envs = json.loads(row["environments"])
            services.append({"service": row["service"], "environments": envs,
                             "cells": {env: cells.get((row["service"], env)) or _empty_cell() for env in envs}})
        return {"total": total, "offset": offset, "services": services}

    async def history(self, service: str, env: str | None, limit: int) -> list[dict]:
        """The service's ledger entries, oldest first (the last `limit`)."""
        rows = await self.conn.fetch(
            "select seq, event_id, type, version, env, event_time, canonical from ledger.entries "
            "where service = $1 and ($2::text is null or env = $2) order by seq desc limit $3", service, env, limit)
        return [entry(row) for row in reversed(rows)]

    async def graph_if_any(self, service: str) -> list[dict]:
        """The pipeline's graph, or [] for a service with no pipeline applied (its releases may still be audited:
        a build registered before any pipeline)."""
        try:
            return await self.graph(service)
        except NotFound:
            return []

    async def audit(self, service: str, version: str) -> list[dict]:
        """Every entry about one release: build, gates, approvals, deployments, verifications, rollbacks."""
        rows = await self.conn.fetch(
            "select seq, event_id, type, version, env, event_time, canonical, hash from ledger.entries "
            "where service = $1 and version = $2 order by seq", service, version)
        return [entry(row) for row in rows]

    async def waiting(self, service: str, version: str, env: str) -> tuple[str, list[str]] | None:
        """(outcome, reasons) of a promotion held at an environment's gates, if the ledger has one."""
        row = await self.conn.fetchrow(
            "select outcome, reasons from ledger.waiting where service = $1 and version = $2 and env = $3",
            service, version, env)
        return (row["outcome"], json.loads(row["reasons"])) if row else None

    async def artifact(self, service: str, version: str) -> tuple[str, str] | None:
        """(author, digest) of a registered artifact."""
        row = await self.conn.fetchrow(
            "select author, digest from ledger.artifacts where service = $1 and version = $2", service, version)
        return (row["author"], row["digest"]) if row else None

    async def bundle(self, service: str, env: str) -> dict:
        """The evidence bundle of the release running in `env` (shared/bundle.py), proven against the ledger's
        latest signed checkpoint; NotYet if that checkpoint does not cover the release's last entry yet."""
        if env not in await self.environments(service):
            raise NotFound(f"environment {env!r} is not in the pipeline of {service}")
        running = await self.conn.fetchrow(
            "select version, digest from ledger.environments where service = $1 and env = $2", service, env)
        if running is None or running["digest"] is None:
            raise NotFound(f"nothing runs in {env} of {service} yet")
        version, digest = running["version"], running["digest"]
        checkpoint = await self.conn.fetchrow(
            "select size, head_seq, statement, signature from ledger.checkpoints order by size desc limit 1")
        rows = await self.conn.fetch(
            "select seq, type, prev_hash, hash, canonical from ledger.entries "
            "where service = $1 and (version = $2 or type = 'pipeline.applied') order by seq", service, version)
        last = max((row["seq"] for row in rows if row["type"] != "pipeline.applied"), default=0)
        if checkpoint is None or checkpoint["head_seq"] < last:
            raise NotYet(f"the ledger has not signed a checkpoint that covers entry #{last} yet (it signs one every "
                         "few seconds when entries were appended: try again)")
        used = {json.loads(bytes(row["canonical"]))["data"].get("pipeline_version")
                for row in rows if row["type"] == "gate.passed"}
        chosen = [(row["seq"], row["prev_hash"], row["hash"], bytes(row["canonical"])) for row in rows
                  if row["seq"] <= checkpoint["head_seq"] and (
                      row["type"] != "pipeline.applied"
                      or json.loads(bytes(row["canonical"]))["data"].get("pipeline_version") in used)]
        leaves = [row["hash"] for row in await self.conn.fetch(
            "select hash from ledger.entries where seq <= $1 order by seq", checkpoint["head_seq"])]
        if len(leaves) != checkpoint["size"]:
            raise RuntimeError(f"the ledger holds {len(leaves)} entries up to its checkpoint of {checkpoint['size']}")
        return assemble(service, env, version, digest, chosen, leaves,
                        {"statement": bytes(checkpoint["statement"]), "signature": checkpoint["signature"]})

    async def verify_chain(self) -> dict:
        """The hash-chain check: entries checked and the first broken entry (None: intact)."""
        rows = await self.conn.fetch("select seq, prev_hash, canonical, hash from ledger.entries order by seq")
        entries = [(r["seq"], r["prev_hash"], bytes(r["canonical"]), r["hash"]) for r in rows]
        broken = first_broken_link(entries)
        return {"entries": len(entries), "intact": broken is None, "first_broken_seq": broken}
