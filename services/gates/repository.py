"""Gates' tables: pipelines, artifacts, promotions, the facts their gates look at, and timers."""

import json
from dataclasses import replace
from datetime import datetime
from typing import Protocol

import asyncpg

from services.gates.domain import Facts, Pending, Release
from shared.contracts.events import SupplyChain
from shared.contracts.pipeline import PipelineDefinition, ProvenanceGate, SignatureGate


async def save_pipeline(conn: asyncpg.Connection, service: str, version: str, definition: dict) -> None:
    """Make this the service's latest applied pipeline."""
    await conn.execute(
        "insert into pipelines (service, pipeline_version, definition) values ($1, $2, $3::jsonb) "
        "on conflict (service) do update set pipeline_version = excluded.pipeline_version, "
        "definition = excluded.definition",
        service, version, json.dumps(definition),
    )


class Pipelines:
    """The latest applied pipeline of each service, its validated definition kept by content hash (a version never
    changes, so it is parsed once by its owner, the handlers); bounded: past `limit` versions it starts over."""

    def __init__(self, limit: int = 4096) -> None:
        self._parsed: dict[str, PipelineDefinition] = {}
        self.limit = limit

    async def latest(self, conn: asyncpg.Connection, service: str) -> tuple[str, PipelineDefinition] | None:
        """(pipeline version, definition) of the latest applied pipeline, or None."""
        version = await conn.fetchval("select pipeline_version from pipelines where service = $1", service)
        if version is None:
            return None
        if version not in self._parsed:
            if len(self._parsed) >= self.limit:
                self._parsed.clear()
            raw = await conn.fetchval("select definition from pipelines where service = $1", service)
            self._parsed[version] = PipelineDefinition.model_validate(json.loads(raw))
        return version, self._parsed[version]


async def save_artifact(conn: asyncpg.Connection, release: Release) -> None:
    """Remember a registered artifact's digest, author and CI checks."""
    await conn.execute(
        "insert into artifacts (service, version, digest, author, checks, location, source_commit, supply_chain) "
        "values ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb) on conflict do nothing",
        release.service, release.version, release.digest, release.author, json.dumps(release.checks),
        release.location, release.commit,
        release.supply_chain.model_dump_json() if release.supply_chain is not None else None,
    )


async def request_promotion(conn: asyncpg.Connection, service: str, version: str, env: str, digest: str,
                            correlation_id: str | None = None) -> bool:
    """Open a pending promotion (with the correlation id of the event that asked for it); False if one for this
    release and environment exists already."""
    inserted = await conn.fetchval(
        "insert into promotions (service, version, env, digest, status, correlation_id) "
        "values ($1, $2, $3, $4, 'pending', $5) on conflict do nothing returning true",
        service, version, env, digest, correlation_id,
    )
    return bool(inserted)


async def pending(conn: asyncpg.Connection, service: str, skip_locked: bool = False,
                  **where: str) -> list[asyncpg.Record]:
    """Pending promotions of a service, narrowed by version, env and/or digest, locked until commit.

    The lock keeps a handler and a timer from judging one promotion at once; the timer skips
    a promotion a handler holds (that handler judges it, and sets its timer, itself).
    """
    clauses, args = ["service = $1", "status = 'pending'"], [service]
    for column, value in where.items():
        args.append(value)
        clauses.append(f"{column} = ${len(args)}")
    return await conn.fetch(
        f"select service, version, env, digest, reasons from promotions where {' and '.join(clauses)} "
        f"order by updated_at for update{' skip locked' if skip_locked else ''}",
        *args,
    )


async def set_outcome(conn: asyncpg.Connection, service: str, version: str, env: str, status: str,
                      reasons: list[str], wake_at: datetime | None = None) -> None:
    """Record a promotion's latest verdict, and its timer: due at `wake_at` while pending, else none."""
    await conn.execute(
        "update promotions set status = $4, reasons = $5::jsonb, updated_at = now() "
        "where service = $1 and version = $2 and env = $3",
        service, version, env, status, json.dumps(reasons),
    )
    await set_timer(conn, service, version, env, wake_at if status == "pending" else None)


async def set_timer(conn: asyncpg.Connection, service: str, version: str, env: str, due_at: datetime | None) -> None:
    """Make the promotion's one timer due at `due_at` (None: remove it)."""
    if due_at is None:
        await conn.execute("delete from timers where service = $1 and version = $2 and env = $3",
                           service, version, env)
    else:
        await conn.execute(
            "insert into timers (service, version, env, due_at) values ($1, $2, $3, $4) "
            "on conflict (service, version, env) do update set due_at = excluded.due_at",
            service, version, env, due_at,
        )


async def due_timers(conn: asyncpg.Connection, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Timers due at `now`, earliest first, locked, with their promotion's correlation id; those another
    transaction holds are skipped."""
    return await conn.fetch(
        "select t.service, t.version, t.env, t.due_at, p.correlation_id from timers t "
        "left join promotions p on (p.service, p.version, p.env) = (t.service, t.version, t.env) "
        "where t.due_at <= $1 order by t.due_at limit $2 for update of t skip locked",
        now, limit,
    )


async def next_due(conn: asyncpg.Connection) -> datetime | None:
    """When the earliest timer is due, if any."""
    return await conn.fetchval("select min(due_at) from timers")


async def save_evidence(conn: asyncpg.Connection, service: str, digest: str, env: str, check: str, result: str) -> None:
    """The latest result of a check for a digest in an environment."""
    await conn.execute(
        "insert into evidence (service, digest, env, check_name, result) values ($1, $2, $3, $4, $5) "
        "on conflict (service, digest, env, check_name) do update set result = excluded.result",
        service, digest, env, check, result,
    )


async def save_approval(conn: asyncpg.Connection, service: str, version: str, env: str, who: str, decision: str,
                        groups: tuple[str, ...] = (), digest: str | None = None) -> None:
    """A person's latest decision on a release for an environment, with their groups at the time and the digest
    they decided on (None: an older event that named none)."""
    await conn.execute(
        "insert into approvals (service, version, env, approver, decision, groups, digest) "
        "values ($1, $2, $3, $4, $5, $6, $7) "
        "on conflict (service, version, env, approver) do update set decision = excluded.decision, "
        "groups = excluded.groups, digest = excluded.digest",
        service, version, env, who, decision, json.dumps(sorted(groups)), digest,
    )


async def save_verification(conn: asyncpg.Connection, service: str, env: str, digest: str, version: str,
                            verified_at: datetime) -> None:
    """The digest was deployed and verified in the environment at `verified_at` (the first time counts)."""
    await conn.execute(
        "insert into verifications (service, env, digest, version, verified_at) values ($1, $2, $3, $4, $5) "
        "on conflict do nothing",
        service, env, digest, version, verified_at,
    )


async def load_facts(conn: asyncpg.Connection, service: str, version: str, env: str, digest: str,
                     pipeline: PipelineDefinition | None) -> Facts:
    """Everything the gates of `env` need to judge this release (one round trip); the artifact's signatures and
    attestations only if the environment's gates look at them."""
    row = await conn.fetchrow(
        "select (select jsonb_build_object('digest', digest, 'author', author, 'checks', checks, 'location', location, "
        "                                  'commit', source_commit, 'supply_chain', case when $5 then supply_chain end) from artifacts "
        "        where service = $1 and version = $2) as artifact, "
        "  (select coalesce(jsonb_agg(jsonb_build_array(env, version, verified_at)), '[]') from verifications "
        "        where service = $1 and digest = $3) as verified, "
        "  (select coalesce(jsonb_agg(jsonb_build_array(env, check_name, result)), '[]') from evidence "
        "        where service = $1 and digest = $3) as evidence, "
        "  (select coalesce(jsonb_agg(jsonb_build_array(approver, decision, groups)), '[]') from approvals "
        "        where service = $1 and version = $2 and env = $4 and (digest is null or digest = $3)) as approvals",
        service, version, digest, env, _checks_supply_chain(pipeline, env),
    )
    artifact = json.loads(row["artifact"]) if row["artifact"] is not None else None
    release = None
    if artifact is not None:
        found = artifact["supply_chain"]
        release = Release(service, version, artifact["digest"], artifact["author"], artifact["checks"],
                          artifact["location"], artifact["commit"],
                          SupplyChain.model_validate(found) if found is not None else None)
    verified = [(e, v, datetime.fromisoformat(at)) for e, v, at in json.loads(row["verified"])]
    evidence = json.loads(row["evidence"])
    approvals = json.loads(row["approvals"])
    return Facts(
        pipeline=pipeline,
        release=release,
        verified_at={e: at for e, _, at in verified},
        evidence={(e, check): result for e, check, result in evidence},
        approvals={who: decision for who, decision, _ in approvals},
        approver_groups={who: frozenset(groups) for who, _, groups in approvals},
        released_here=any(e == env and v == version for e, v, _ in verified),
    )


def _checks_supply_chain(pipeline: PipelineDefinition | None, env: str) -> bool:
    """Whether `env`'s gates look at signatures or attestations (only then are they read)."""
    if pipeline is None or env not in pipeline.environment_names:
        return False
    return any(isinstance(gate, SignatureGate | ProvenanceGate) for gate in pipeline.environment(env).gates)


class Repository(Protocol):
    """What gates' handlers keep and read (`PostgresRepository`: the tables above; `MemoryRepository`: dicts, for
    fast tests of the handlers). One contract suite runs on both (tests/e2e/test_gates_repository.py)."""

    async def save_pipeline(self, service: str, version: str, definition: dict) -> None: ...
    async def latest_pipeline(self, service: str) -> tuple[str, PipelineDefinition] | None: ...
    async def save_artifact(self, release: Release) -> None: ...
    async def request_promotion(self, service: str, version: str, env: str, digest: str,
                                correlation_id: str | None = None) -> bool: ...
    async def pending(self, service: str, skip_locked: bool = False, **where: str) -> list[Pending]: ...
    async def set_outcome(self, service: str, version: str, env: str, status: str, reasons: list[str],
                          wake_at: datetime | None = None) -> None: ...
    async def save_evidence(self, service: str, digest: str, env: str, check: str, result: str) -> None: ...
    async def save_approval(self, service: str, version: str, env: str, who: str, decision: str,
                            groups: tuple[str, ...] = (), digest: str | None = None) -> None: ...
    async def save_verification(self, service: str, env: str, digest: str, version: str,
                                verified_at: datetime) -> None: ...
    async def load_facts(self, service: str, version: str, env: str, digest: str,
                         pipeline: PipelineDefinition | None) -> Facts: ...


class PostgresRepository:
    """Gates' tables on one connection (the handler's transaction); parsed pipelines from `pipelines`."""

    def __init__(self, conn: asyncpg.Connection, pipelines: Pipelines) -> None:
        self.conn, self.pipelines = conn, pipelines

    async def save_pipeline(self, service: str, version: str, definition: dict) -> None:
        await save_pipeline(self.conn, service, version, definition)

    async def latest_pipeline(self, service: str) -> tuple[str, PipelineDefinition] | None:
        return await self.pipelines.latest(self.conn, service)

    async def save_artifact(self, release: Release) -> None:
        await save_artifact(self.conn, release)

    async def request_promotion(self, service: str, version: str, env: str, digest: str,
                                correlation_id: str | None = None) -> bool:
        return await request_promotion(self.conn, service, version, env, digest, correlation_id)

    async def pending(self, service: str, skip_locked: bool = False, **where: str) -> list[Pending]:
        return [Pending(r["service"], r["version"], r["env"], r["digest"], json.loads(r["reasons"]))
                for r in await pending(self.conn, service, skip_locked, **where)]

    async def set_outcome(self, service: str, version: str, env: str, status: str, reasons: list[str],
                          wake_at: datetime | None = None) -> None:
        await set_outcome(self.conn, service, version, env, status, reasons, wake_at)

    async def save_evidence(self, service: str, digest: str, env: str, check: str, result: str) -> None:
        await save_evidence(self.conn, service, digest, env, check, result)

    async def save_approval(self, service: str, version: str, env: str, who: str, decision: str,
                            groups: tuple[str, ...] = (), digest: str | None = None) -> None:
        await save_approval(self.conn, service, version, env, who, decision, groups, digest)

    async def save_verification(self, service: str, env: str, digest: str, version: str,
                                verified_at: datetime) -> None:
        await save_verification(self.conn, service, env, digest, version, verified_at)

    async def load_facts(self, service: str, version: str, env: str, digest: str,
                         pipeline: PipelineDefinition | None) -> Facts:
        return await load_facts(self.conn, service, version, env, digest, pipeline)


class MemoryRepository:
    """Gates' state in dicts, with the tables' rules: a promotion and an artifact are kept once, the first
    verification of a digest in an environment counts, the latest evidence and decision of each win."""

    def __init__(self) -> None:
        self.pipelines: dict[str, tuple[str, PipelineDefinition]] = {}
        self.artifacts: dict[tuple[str, str], Release] = {}
        self.promotions: dict[tuple[str, str, str], dict] = {}
        self.timers: dict[tuple[str, str, str], datetime] = {}
        self.evidence: dict[tuple[str, str, str, str], str] = {}
        self.approvals: dict[tuple[str, str, str, str], tuple[str, tuple[str, ...], str | None]] = {}
        self.verifications: dict[tuple[str, str, str], tuple[str, datetime]] = {}
        self._clock = 0

    async def save_pipeline(self, service: str, version: str, definition: dict) -> None:
        self.pipelines[service] = (version, PipelineDefinition.model_validate(definition))

    async def latest_pipeline(self, service: str) -> tuple[str, PipelineDefinition] | None:
        return self.pipelines.get(service)

    async def save_artifact(self, release: Release) -> None:
        self.artifacts.setdefault((release.service, release.version), release)

    async def request_promotion(self, service: str, version: str, env: str, digest: str,
                                correlation_id: str | None = None) -> bool:
        if (service, version, env) in self.promotions:
            return False
        self._clock += 1
        self.promotions[(service, version, env)] = {"digest": digest, "status": "pending", "reasons": [],
                                                    "updated": self._clock, "correlation_id": correlation_id}
        return True

    async def pending(self, service: str, skip_locked: bool = False, **where: str) -> list[Pending]:
        found = [(row["updated"], Pending(s, version, env, row["digest"], list(row["reasons"])))
                 for (s, version, env), row in self.promotions.items() if s == service and row["status"] == "pending"]
        return [p for _, p in sorted(found, key=lambda item: item[0])
                if all(getattr(p, column) == value for column, value in where.items())]

    async def set_outcome(self, service: str, version: str, env: str, status: str, reasons: list[str],
                          wake_at: datetime | None = None) -> None:
        row = self.promotions.get((service, version, env))
        if row is not None:
            self._clock += 1
            row.update(status=status, reasons=list(reasons), updated=self._clock)
        if status == "pending" and wake_at is not None:
            self.timers[(service, version, env)] = wake_at
        else:
            self.timers.pop((service, version, env), None)

    async def save_evidence(self, service: str, digest: str, env: str, check: str, result: str) -> None:
        self.evidence[(service, digest, env, check)] = result

    async def save_approval(self, service: str, version: str, env: str, who: str, decision: str,
                            groups: tuple[str, ...] = (), digest: str | None = None) -> None:
        self.approvals[(service, version, env, who)] = (decision, tuple(sorted(groups)), digest)

    async def save_verification(self, service: str, env: str, digest: str, version: str,
                                verified_at: datetime) -> None:
        self.verifications.setdefault((service, env, digest), (version, verified_at))

    async def load_facts(self, service: str, version: str, env: str, digest: str,
                         pipeline: PipelineDefinition | None) -> Facts:
        release = self.artifacts.get((service, version))
        if release is not None and not _checks_supply_chain(pipeline, env):
            release = replace(release, supply_chain=None)
        verified = [(e, v, at) for (s, e, d), (v, at) in self.verifications.items() if s == service and d == digest]
        approvals = [(who, decision, groups) for (s, v, e, who), (decision, groups, decided_on)
                     in self.approvals.items() if (s, v, e) == (service, version, env)
                     and (decided_on is None or decided_on == digest)]
        return Facts(
            pipeline=pipeline, release=release, verified_at={e: at for e, _, at in verified},
            evidence={(e, check): result for (s, d, e, check), result in self.evidence.items()
                      if s == service and d == digest},
            approvals={who: decision for who, decision, _ in approvals},
            approver_groups={who: frozenset(groups) for who, _, groups in approvals},
            released_here=any(e == env and v == version for e, v, _ in verified))
