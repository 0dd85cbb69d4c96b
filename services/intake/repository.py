"""Intake's tables: registered artifacts and the first environment of each service's pipeline."""

import asyncpg

from shared.contracts.events import ArtifactRegistered


async def registered_digest(conn: asyncpg.Connection, service: str, version: str) -> str | None:
    """The digest a service:version was registered with, if any."""
    return await conn.fetchval("select digest from artifacts where service = $1 and version = $2", service, version)


async def registered(conn: asyncpg.Connection, releases: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (service, version) pairs are registered already."""
    rows = await conn.fetch(
        "select service, version from artifacts where (service, version) in "
        "(select * from unnest($1::text[], $2::text[]))",
        [service for service, _ in releases], [version for _, version in releases],
    )
    return {(row["service"], row["version"]) for row in rows}


async def first_env(conn: asyncpg.Connection, service: str) -> str | None:
    """The first environment of the service's latest applied pipeline, if one was applied."""
    return await conn.fetchval("select first_env from pipelines where service = $1", service)


async def add_artifact(conn: asyncpg.Connection, artifact: ArtifactRegistered, promotion_requested: bool) -> None:
    """Record a newly registered artifact."""
    await conn.execute(
        "insert into artifacts (service, version, digest, kind, author, commit, build_event_id, promotion_requested, "
        "location, tag, tag_digest) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $3)",
        artifact.service, artifact.version, artifact.digest, artifact.kind, artifact.author,
        artifact.commit, artifact.build_event_id, promotion_requested, artifact.location, artifact.tag,
    )


async def tags_to_check(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Registered images with a tag, least recently checked first."""
    return await conn.fetch(
        "select service, version, digest, tag, tag_digest from artifacts where tag is not null "
        "order by tag_checked_at nulls first limit $1", limit)


async def tag_checked(conn: asyncpg.Connection, service: str, version: str, names: str | None) -> None:
    """The tag was looked at now; `names`: the digest it named (None: unknown, or not asked)."""
    await conn.execute(
        "update artifacts set tag_checked_at = now(), tag_digest = coalesce($3, tag_digest) "
        "where service = $1 and version = $2", service, version, names)


async def save_pipeline(conn: asyncpg.Connection, service: str, pipeline_version: str, first: str) -> None:
    """Remember the latest applied pipeline's first environment."""
    await conn.execute(
        "insert into pipelines (service, pipeline_version, first_env) values ($1, $2, $3) "
        "on conflict (service) do update set pipeline_version = excluded.pipeline_version, first_env = excluded.first_env",
        service, pipeline_version, first,
    )


async def take_unpromoted(conn: asyncpg.Connection, service: str) -> list[asyncpg.Record]:
    """Artifacts registered before any pipeline existed, marked as promoted now."""
    return await conn.fetch(
        "update artifacts set promotion_requested = true where service = $1 and not promotion_requested "
        "returning version, digest",
        service,
    )
