"""Gates' handlers: keep what happened, load what it bears on, decide (services/gates/domain.py `decide`), save,
emit."""

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from services.gates import repository
from services.gates.repository import PostgresRepository, Repository
from services.gates.domain import Release, State, decide
from services.gates.trusted_keys import TrustedKeys
from shared.contracts.events import (ApprovalGranted, ApprovalRejected, ArtifactRegistered, DeploymentFailed, Event,
                                     EventData, EvidenceRecorded, PipelineApplied, PromotionRequested,
                                     VerificationFailed, VerificationPassed)
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
        return await self._decide(self.store(conn), None, service, now=now, skip_locked=True, version=version, env=env)

    async def apply(self, store: Repository, event: Event) -> list[EventData]:
        """One event against the state in `store`: its fact kept, the state it bears on loaded, decided (the rule
        is `domain.decide`), the verdicts saved; the events to emit returned."""
        where = await self._keep(store, event)
        if where is None:
            return []
        return await self._decide(store, event.data, event.data.service, **where)

    async def _keep(self, store: Repository, event: Event) -> dict[str, str] | None:
        """Keep the fact `event` carries; which pending promotions it may unblock (None: it unblocks none)."""
        data = event.data
        match data:
            case PipelineApplied():
                await store.save_pipeline(data.service, data.pipeline_version, data.definition)
                return {}
            case ArtifactRegistered():
                await store.save_artifact(Release(data.service, data.version, data.digest, data.author,
                                                  dict(data.checks), data.location, data.commit, data.supply_chain))
                return {"version": data.version}
            case PromotionRequested():
                await store.request_promotion(data.service, data.version, data.env, data.digest, event.correlation_id)
                return {"version": data.version, "env": data.env}
            case EvidenceRecorded():
                await store.save_evidence(data.service, data.digest, data.env, data.check, data.result)
                return {"digest": data.digest}
            case ApprovalGranted() | ApprovalRejected():
                decision = "granted" if isinstance(data, ApprovalGranted) else "rejected"
                await store.save_approval(data.service, data.version, data.env, data.approver, decision,
                                          data.groups, data.digest)
                return {"version": data.version, "env": data.env}
            case VerificationPassed(purpose="promotion"):
                # The event's time, not the clock's: a rebuild from the topics then finds the same soak end.
                # Never later than now, so a clock ahead in the deployer cannot stretch a soak.
                await store.save_verification(data.service, data.env, data.digest, data.version,
                                              min(event.envelope.time, self.clock()))
                return {"digest": data.digest}
            case VerificationFailed(purpose="promotion") | DeploymentFailed(purpose="promotion"):
                await store.set_outcome(data.service, data.version, data.env, "failed", [data.reason])
        return None

    async def _decide(self, store: Repository, event: EventData | None, service: str, *,
                      now: datetime | None = None, skip_locked: bool = False, **where: str) -> list[EventData]:
        """Load the state (the latest pipeline, the matching pending promotions and their facts), decide at `now`,
        save each verdict as its promotion's outcome (with its timer); the events to emit."""
        loaded = await store.latest_pipeline(service)
        pipeline_version, pipeline = loaded if loaded else (None, None)
        promotions = []
        for row in await store.pending(service, skip_locked, **where):
            facts = await store.load_facts(service, row.version, row.env, row.digest, pipeline)
            if facts.release is not None and facts.release.supply_chain is not None:
                facts = replace(facts, trusted_keys=self.trusted_keys.current())
            promotions.append((row, facts))
        decision = decide(State(pipeline_version, pipeline, tuple(promotions)), event, now or self.clock())
        for row, verdict in decision.verdicts:
            await store.set_outcome(service, row.version, row.env, verdict.outcome, list(verdict.reasons),
                                    verdict.wake_at)
        return list(decision.events)


def _matters(data: EventData) -> bool:
    """Whether gates keeps anything from this event (it also reads events meant for others)."""
    if isinstance(data, VerificationPassed | VerificationFailed | DeploymentFailed):
        return data.purpose == "promotion"
    return isinstance(data, PipelineApplied | ArtifactRegistered | PromotionRequested | EvidenceRecorded
                      | ApprovalGranted | ApprovalRejected)
