"""Gates' handlers: record what happened, then re-judge the promotions it may unblock."""

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from services.gates import repository
from services.gates.repository import PostgresRepository, Repository
from services.gates.domain import Release, evaluate, requests_after, verdict_event
from services.gates.trusted_keys import TrustedKeys
from shared.contracts.events import (ApprovalGranted, ApprovalRejected, ArtifactRegistered, DeploymentFailed, Event,
                           EventData, EvidenceRecorded, PipelineApplied, PromotionRequested, VerificationFailed,
                           VerificationPassed)
from shared.platform.consumer import UnitOfWork
from shared.platform.runtime import ServiceRuntime


class GatesHandlers:
    """Every input is a fact; after saving it, the pending promotions it touches are judged again."""

    def __init__(self, runtime: ServiceRuntime, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 store: Callable[[asyncpg.Connection], Repository] | None = None) -> None:
        self.runtime = runtime
        self.clock = clock
        self.trusted_keys = TrustedKeys(runtime.settings.trusted_keys_dir)
        self.pipelines = repository.Pipelines()  # the handlers' own: no process-wide cache
        self.store = store or (lambda conn: PostgresRepository(conn, self.pipelines))

    async def handle(self, event: Event, unit: UnitOfWork | None = None) -> None:
        """Save the fact carried by `event` and emit the verdicts that changed, in one transaction."""
        if not _matters(event.data):
            return  # no state to change, so no transaction (and no inbox row) is needed

        async def work(conn: asyncpg.Connection) -> list[Event]:
            return self.runtime.events(await self.apply(self.store(conn), event), event)

        await self.runtime.once(event, work, unit)

    async def on_timer(self, conn: asyncpg.Connection, service: str, version: str, env: str,
                       now: datetime) -> list[EventData]:
        """A timer came due: judge that promotion again at `now`, unless a handler holds it (it judges it)."""
        return await self._judge(self.store(conn), service, now=now, skip_locked=True, version=version, env=env)

    async def apply(self, store: Repository, event: Event) -> list[EventData]:
        """One event against the state in `store`: the fact kept, the verdicts it changed returned."""
        data, at = event.data, event.envelope.time
        match data:
            case PipelineApplied():
                await store.save_pipeline(data.service, data.pipeline_version, data.definition)
                return await self._judge(store, data.service)
            case ArtifactRegistered():
                release = Release(data.service, data.version, data.digest, data.author, dict(data.checks),
                                  data.location, data.commit, data.supply_chain)
                await store.save_artifact(release)
                return await self._judge(store, data.service, version=data.version)
            case PromotionRequested():
                await store.request_promotion(data.service, data.version, data.env, data.digest,
                                                   event.correlation_id)
                return await self._judge(store, data.service, version=data.version, env=data.env)
            case EvidenceRecorded():
                await store.save_evidence(data.service, data.digest, data.env, data.check, data.result)
                return await self._judge(store, data.service, digest=data.digest)
            case ApprovalGranted() | ApprovalRejected():
                decision = "granted" if isinstance(data, ApprovalGranted) else "rejected"
                await store.save_approval(data.service, data.version, data.env, data.approver, decision,
                                               data.groups, data.digest)
                # A person acted: always answer with the verdict, even when it did not change.
                return await self._judge(store, data.service, always=True, version=data.version, env=data.env)
            case VerificationPassed(purpose="promotion"):
                return await self._on_verified(store, data, at)
            case VerificationFailed(purpose="promotion") | DeploymentFailed(purpose="promotion"):
                await store.set_outcome(data.service, data.version, data.env, "failed", [data.reason])
                return []
        return []

    async def _on_verified(self, store: Repository, data: VerificationPassed, at: datetime) -> list[EventData]:
        """Verified in an environment (at `at`, the event's own time): the release may now be requested for each
        environment that comes after it (one in a line, several where the pipeline fans out; a join is requested
        by each of its upstreams and judged by its `require`)."""
        # The event's time, not the clock's: a rebuild from the topics then finds the same soak end.
        # Never later than now, so a clock ahead in the deployer cannot stretch a soak.
        verified_at = min(at, self.clock())
        await store.save_verification(data.service, data.env, data.digest, data.version, verified_at)
        loaded = await store.latest_pipeline(data.service)
        requested: list[EventData] = list(requests_after(loaded[1] if loaded else None, data))
        return requested + await self._judge(store, data.service, digest=data.digest)

    async def _judge(self, store: Repository, service: str, always: bool = False, *,
                     now: datetime | None = None, skip_locked: bool = False, **where: str) -> list[EventData]:
        """Evaluate the matching pending promotions at `now`; emit a verdict where it changed."""
        loaded = await store.latest_pipeline(service)
        pipeline_version, pipeline = loaded if loaded else (None, None)
        now = now or self.clock()
        emitted: list[EventData] = []
        for row in await store.pending(service, skip_locked, **where):
            version, env, digest = row.version, row.env, row.digest
            facts = await store.load_facts(service, version, env, digest, pipeline)
            if facts.release is not None and facts.release.supply_chain is not None:
                facts = replace(facts, trusted_keys=self.trusted_keys.current())
            verdict = evaluate(env, digest, facts, now)
            ident = dict(service=service, version=version, digest=digest, env=env)
            said = verdict_event(verdict, facts, ident, pipeline_version, row.reasons, always)
            emitted += [said] if said is not None else []
            await store.set_outcome(service, version, env, verdict.outcome, list(verdict.reasons),
                                         verdict.wake_at)
        return emitted


def _matters(data: EventData) -> bool:
    """Whether gates keeps anything from this event (it also reads events meant for others)."""
    if isinstance(data, VerificationPassed | VerificationFailed | DeploymentFailed):
        return data.purpose == "promotion"
    return isinstance(data, PipelineApplied | ArtifactRegistered | PromotionRequested | EvidenceRecorded
                      | ApprovalGranted | ApprovalRejected)
