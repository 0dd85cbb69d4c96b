"""Intake's handlers: load, decide (domain), save and emit in one transaction."""

import asyncio

import asyncpg

from services.intake import domain, repository
from shared.artifacts import ArtifactStore, ArtifactUnreachable, DigestMismatch
from shared.events import ArtifactRegistered, BuildCompleted, Event, PipelineApplied, PromotionRequested
from shared.pipeline import PipelineDefinition
from shared.runtime import ServiceRuntime


class IntakeHandlers:
    """Reacts to builds and pipeline changes."""

    def __init__(self, runtime: ServiceRuntime, store: ArtifactStore) -> None:
        self.runtime = runtime
        self.store = store
        self._fetched: dict[str, domain.Fetched] = {}
        """Artifacts copied by `prepare` for the batch being handled, by build event id."""

    async def prepare(self, events: list[Event]) -> None:
        """Before a batch's transaction: copy the artifacts of its new builds into the store side by
        side (each copy ends with an fsync, so most of the time is waiting on the disk)."""
        self._fetched = await self._copy_new([event for event in events if isinstance(event.data, BuildCompleted)])

    async def _copy_new(self, builds: list[Event]) -> dict[str, domain.Fetched]:
        """Copy the files of the builds whose release is not registered yet; the outcome by event id."""
        builds = [event for event in builds if event.data.artifact.kind == "file"]
        if not builds:
            return {}
        async with self.runtime.pool.acquire() as conn:
            known = await repository.registered(conn, [(event.data.service, event.data.version) for event in builds])
        new = [event for event in builds if (event.data.service, event.data.version) not in known]
        copies = await asyncio.gather(*(asyncio.to_thread(self._fetch, event.data.artifact.uri,
                                                          event.data.artifact.digest) for event in new))
        return {event.id: fetched for event, fetched in zip(new, copies)}

    async def handle(self, event: Event) -> None:
        """Dispatch by event type; other types on our topics are not ours to act on."""
        if isinstance(event.data, BuildCompleted):
            await self.on_build(event)
        elif isinstance(event.data, PipelineApplied):
            await self.on_pipeline(event)

    async def on_build(self, event: Event) -> None:
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

        await self.runtime.once(event, work)

    def _fetch(self, uri: str, claimed: str) -> domain.Fetched:
        """Let the store copy the file if its bytes are the claimed ones (it keeps what a rebuild needs)."""
        try:
            self.store.fetch(uri, claimed)
        except DigestMismatch:
            return domain.Fetched("mismatch")
        except ArtifactUnreachable as error:
            return domain.Fetched("unreachable", str(error))
        return domain.Fetched("stored")

    async def on_pipeline(self, event: Event) -> None:
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

        await self.runtime.once(event, work)
