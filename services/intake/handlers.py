"""Intake's handlers: load, decide (domain), save and emit in one transaction."""

import asyncio

import asyncpg
import structlog

from services.intake import domain, repository, supply_chain
from shared.artifacts import ArtifactStore, ArtifactUnreachable, DigestMismatch
from shared.contracts.events import (Artifact, ArtifactRegistered, ArtifactTagMoved, BuildCompleted, Event,
                                     PipelineApplied, PromotionRequested)
from shared.oci import ImageMismatch, Registry, RegistryDenied, RegistryError, RegistryUnavailable, parse_reference
from shared.platform.outbox import enqueue
from shared.contracts.pipeline import PipelineDefinition
from shared.platform.consumer import UnitOfWork
from shared.platform.runtime import ServiceRuntime

log = structlog.get_logger()


class IntakeHandlers:
    """Reacts to builds and pipeline changes."""

    def __init__(self, runtime: ServiceRuntime, store: ArtifactStore, registry: Registry | None = None) -> None:
        self.runtime = runtime
        self.store = store
        self._registry = registry
        self._fetched: dict[str, domain.Fetched] = {}
        """Artifacts copied by `prepare` for the batch being handled, by build event id."""

    async def prepare(self, events: list[Event]) -> None:
        """Before a batch's transaction: copy the artifacts of its new builds into the store side by
        side (each copy ends with an fsync, so most of the time is waiting on the disk)."""
        self._fetched = await self._copy_new([event for event in events if isinstance(event.data, BuildCompleted)])

    async def _copy_new(self, builds: list[Event]) -> dict[str, domain.Fetched]:
        """Copy the files (check the images) of the builds whose release is not registered yet; the outcome by
        event id. A registry outage raises RegistryUnavailable: the batch is read again later, nothing lost."""
        if not builds:
            return {}
        async with self.runtime.pool.acquire() as conn:
            known = await repository.registered(conn, [(event.data.service, event.data.version) for event in builds])
        new = [event for event in builds if (event.data.service, event.data.version) not in known]
        outcomes = await asyncio.gather(*(self._obtain(event.data.artifact) for event in new))
        return {event.id: fetched for event, fetched in zip(new, outcomes)}

    async def _obtain(self, artifact: Artifact) -> domain.Fetched:
        if artifact.kind == "file":
            return await asyncio.to_thread(self._fetch, artifact.uri, artifact.digest)
        return await self._check_image(artifact.uri, artifact.digest)

    async def _check_image(self, uri: str, claimed: str) -> domain.Fetched:
        """The image's manifest (by its reference) has the claimed digest and every blob it names exists."""
        try:
            ref = parse_reference(uri)
        except ValueError as error:
            return domain.Fetched("unreachable", str(error))
        allowed = self.runtime.settings.image_registries
        if ref.registry not in allowed:
            return domain.Fetched("unreachable", f"registry {ref.registry} is not one images may come from "
                                                 f"(image_registries: {', '.join(allowed)})")
        try:
            checked = await self.registry.check(ref, expected=claimed)
        except ImageMismatch as error:
            return domain.Fetched("mismatch", str(error))
        except RegistryDenied as error:
            return domain.Fetched("denied", str(error))
        except RegistryError as error:
            return domain.Fetched("unreachable", str(error))
        try:
            found = await supply_chain.collect(self.registry, parse_reference(checked.location))
        except RegistryDenied as error:
            return domain.Fetched("denied", f"reading the signatures of {checked.location}: {error}")
        return domain.Fetched("stored", location=checked.location, supply_chain=found)

    async def check_tags(self) -> float:
        """Ask the registry what the tags of registered images name now (a round of the least recently checked);
        a tag found naming other bytes is reported once per new digest. The releases keep their digests.
        Returns the seconds until the next round."""
        interval = self.runtime.settings.tag_check_interval_s
        if interval <= 0:
            return 3600.0
        async with self.runtime.pool.acquire() as conn:
            rows = await repository.tags_to_check(conn, self.runtime.settings.tag_checks_per_round)
        for row in rows:
            ref = parse_reference(row["tag"])
            names = None
            if ref.digest is None:  # a reference by digest cannot move
                try:
                    names = await self.registry.digest_of(ref)
                except RegistryUnavailable as error:
                    log.warning("tags.registry_unavailable", error=str(error))
                    break  # the next round asks again
                except RegistryError as error:  # unknown now, or refused: asked again next round
                    log.info("tags.unreadable", tag=row["tag"], error=str(error))
            moved = names is not None and names != row["tag_digest"] and names != row["digest"]
            async with self.runtime.pool.acquire() as conn, conn.transaction():
                await repository.tag_checked(conn, row["service"], row["version"], names)
                emitted = []
                if moved:
                    data = ArtifactTagMoved(service=row["service"], version=row["version"], digest=row["digest"],
                                            tag=row["tag"], moved_to=names)
                    emitted = [self.runtime.timed_event(data, f"tag-moved/{row['service']}/{row['version']}/{names}")]
                    await enqueue(conn, emitted)
            if emitted:
                self.runtime.committed(emitted)
                log.warning("artifact.tag_moved", artifact=f"{row['service']}:{row['version']}", tag=row["tag"],
                            moved_to=names)
        return interval

    @property
    def registry(self) -> Registry:
        """The registry client, logged in as intake (made at the first image)."""
        if self._registry is None:
            self._registry = Registry.from_settings(self.runtime.settings)
        return self._registry

    async def handle(self, event: Event, unit: UnitOfWork | None = None) -> None:
        """Dispatch by event type; other types on our topics are not ours to act on."""
        if isinstance(event.data, BuildCompleted):
            await self.on_build(event, unit)
        elif isinstance(event.data, PipelineApplied):
            await self.on_pipeline(event, unit)

    async def on_build(self, event: Event, unit: UnitOfWork | None = None) -> None:
        """Register the artifact (copying and checking its bytes) or reject it."""
        build: BuildCompleted = event.data
        fetched = self._fetched.pop(event.id, None)
        if fetched is None:  # not copied by `prepare` (a record run on its own)
            fetched = (await self._copy_new([event])).get(event.id)

        async def work(conn: asyncpg.Connection) -> list[Event]:
            registered = await repository.registered_digest(conn, build.service, build.version)
            decided = domain.decide_build(
                build, build_event_id=event.id, registered_digest=registered,
                fetched=fetched if registered is None else None,
                first_env=await repository.first_env(conn, build.service),
            )
            for item in decided:
                if isinstance(item, ArtifactRegistered):
                    requested = any(isinstance(other, PromotionRequested) for other in decided)
                    await repository.add_artifact(conn, item, requested)
            return self.runtime.events(decided, event)

        await self.runtime.once(event, work, unit)

    def _fetch(self, uri: str, claimed: str) -> domain.Fetched:
        """Let the store copy the file if its bytes are the claimed ones (it keeps what a rebuild needs)."""
        try:
            self.store.fetch(uri, claimed)
        except DigestMismatch:
            return domain.Fetched("mismatch")
        except ArtifactUnreachable as error:
            return domain.Fetched("unreachable", str(error))
        found = supply_chain.collect_file(uri, self.store.sources)
        return domain.Fetched("stored", supply_chain=found)

    async def on_pipeline(self, event: Event, unit: UnitOfWork | None = None) -> None:
        """Keep the first environment; request promotions of artifacts that were waiting for it."""
        applied: PipelineApplied = event.data
        first = PipelineDefinition.model_validate(applied.definition).first_environment.name

        async def work(conn: asyncpg.Connection) -> list[Event]:
            await repository.save_pipeline(conn, applied.service, applied.pipeline_version, first)
            waiting = await repository.take_unpromoted(conn, applied.service)
            return self.runtime.events(
                [PromotionRequested(service=applied.service, version=r["version"], digest=r["digest"], env=first)
                 for r in waiting],
                event,
            )

        await self.runtime.once(event, work, unit)
