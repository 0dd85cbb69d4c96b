"""Disaster recovery of the deployer: its schema rebuilt from its own events and from what the drivers report.

The generic rebuild (shared/platform/rebuild.py) reads a service's input topics again from their start. For the deployer
that would start again every release ever ordered, in whatever ports came free. So when the deployer finds its
schema new (dropped, or a first start), its state is rebuilt from what it said it did, on promotion.deployments
(only its own events: nobody else may write there), checked against what the drivers report running:

- each deployment with its outcome (the `deployments` rows), by deployment id;
- each environment's slot port (deployment.succeeded `port`), or its router port and lanes' ports (`lane`,
  `lane_port`), the live lane (the lane of the last verified routed release), what runs in each (the driver's
  run files, labels or journal: its pid, if it still runs that digest);
- what was promoted where (the drift checks' reference), and each environment's on_drift from the last
  pipeline.applied (promotion.pipelines);
- each canary in progress at the step its last deployment.progressed names, to be published again and judged
  afresh (paused if it was paused).

The consumer group keeps its committed offsets: orders handled before are not handled again. The records after
them will be delivered again: for those whose deployment finished, their inbox rows are written now, so a
redelivery does nothing; those still in flight are handled as any redelivered order is (the driver finds the
release running and the deployer re-attaches). A deployment in flight whose order is behind the committed offset
(a canary's, or one whose outcome was in the lost outbox) is finished by the deployer itself (`resume_rebuilt`).
Nothing that runs is started again.
"""

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import TypeAdapter

from services.deployer import repository
from services.deployer.domain import LANES, Target, target_from_json, target_json
from services.deployer.routed import lane_slot
from shared.platform import inbox
from shared.contracts import topics
from shared.platform.client import partitions_of, read_range, start_client
from shared.platform.consumer import parse_record
from shared.platform.credentials import kafka_options
from shared.contracts.events import (DeploymentFailed, DeploymentProgressed, DeploymentStarted, DeploymentSucceeded,
                           EnvironmentPruned, Event, InvalidEvent, PipelineApplied, VerificationFailed,
                           VerificationPassed, parse_event)
from shared.contracts.pipeline import Canary, PipelineDefinition, Strategy

log = structlog.get_logger()

STRATEGY: TypeAdapter[Strategy] = TypeAdapter(Strategy)
SOURCE = "/promote/deployer"
ORDER_TOPICS = (topics.GATES, topics.ROLLBACKS)
DEPLOYMENT_EVENTS = (DeploymentStarted, DeploymentSucceeded, DeploymentFailed, DeploymentProgressed,
                     VerificationPassed, VerificationFailed)


@dataclass
class Deployment:
    """One deployment as the deployer's own events tell it."""

    first: Event
    """The first of its events (its target's fields; its correlation)."""
    status: str = "started"
    """started, verified or failed."""
    reason: str | None = None
    port: int | None = None
    lane: str | None = None
    lane_port: int | None = None
    progressed: DeploymentProgressed | None = None
    """Its last deployment.progressed: a canary's step."""

    @property
    def id(self) -> str:
        return self.first.data.deployment_id

    @property
    def target(self) -> Target:
        data = self.first.data
        return Target(data.deployment_id, data.service, data.env, data.version, data.digest, dict(data.config),
                      data.config_version, purpose=data.purpose, rollback_id=data.rollback_id, driver=data.driver,
                      location=data.location, replicas=data.replicas, resources=data.resources)

    @property
    def canary_in_progress(self) -> bool:
        return self.status == "started" and self.progressed is not None and self.lane is not None


@dataclass
class Place:
    """One environment as the deployer's own events tell it."""

    service: str
    env: str
    slot_port: int | None = None
    route_port: int | None = None
    lane_ports: dict[str, int] = field(default_factory=dict)
    live: str | None = None
    slot_release: str | None = None
    """The last deployment that ran in the environment's own slot (rolling)."""
    lane_releases: dict[str, str] = field(default_factory=dict)
    """The last deployment verified in each lane."""
    promoted: str | None = None
    """The last verified deployment: what the environment should run."""
    replaced: bool = False
    """A rolling deployment after `promoted` stopped it and failed."""


@dataclass
class Folded:
    """The deployer's state as its events tell it."""

    deployments: dict[str, Deployment] = field(default_factory=dict)
    places: dict[tuple[str, str], Place] = field(default_factory=dict)


def fold(events: Iterable[Event]) -> Folded:
    """The state the deployer's own events describe (pure; each service's events in their order)."""
    folded = Folded()
    for event in events:
        data = event.data
        if isinstance(data, EnvironmentPruned):
            folded.places.pop((data.service, data.env), None)
            continue
        if not isinstance(data, DEPLOYMENT_EVENTS):
            continue
        deployment = folded.deployments.setdefault(data.deployment_id, Deployment(event))
        place = folded.places.setdefault((data.service, data.env), Place(data.service, data.env))
        _take(place, deployment, data)
    return folded


def _take(place: Place, deployment: Deployment, data) -> None:
    """One deployment event's mark on its deployment and its environment."""
    if isinstance(data, DeploymentSucceeded):
        deployment.port, deployment.lane, deployment.lane_port = data.port, data.lane, data.lane_port
        if data.lane is None:
            place.slot_port, place.slot_release = data.port, deployment.id
        else:
            place.route_port = data.port
            if data.lane_port is not None:
                place.lane_ports[data.lane] = data.lane_port
    elif isinstance(data, DeploymentProgressed):
        deployment.progressed = data
        if data.lane is not None:
            deployment.lane = data.lane
            if data.lane_port is not None:
                place.lane_ports[data.lane] = data.lane_port
    elif isinstance(data, VerificationPassed):
        deployment.status = "verified"
        place.promoted, place.replaced = deployment.id, False
        if deployment.lane is not None:
            place.live = deployment.lane
            place.lane_releases[deployment.lane] = deployment.id
    elif isinstance(data, (VerificationFailed, DeploymentFailed)):
        deployment.status, deployment.reason = "failed", data.reason
        if isinstance(data, VerificationFailed) and deployment.lane is None and place.promoted is not None:
            place.replaced = True  # a rolling start stopped what served, and failed


async def read_topics(settings, topic_names: tuple[str, ...], *, since_committed: bool = False) -> list:
    """Every record of the topics up to their current end (from the deployer group's committed offsets with
    `since_committed`: the records it will be handed again), each partition in order."""
    options = kafka_options(settings, "deployer")
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    await start_client(consumer, settings.kafka_bootstrap)
    try:
        partitions = await partitions_of(consumer, topic_names)
        first, end = await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)
        if since_committed:
            first = {**first, **await _committed(options, partitions)}
        plan = {tp: (first[tp], end[tp] - 1) for tp in partitions if end[tp] > first[tp]}
        return [record async for record in read_range(consumer, plan)]
    finally:
        await consumer.stop()


async def _committed(options: dict, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets("deployer", partitions=partitions)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def parsed(records: list, source: str | None = None) -> list[Event]:
    """The valid events of `records` (from `source` only, if given); the rest were dead-lettered when consumed."""
    events = []
    for record in records:
        try:
            event = parse_record(record)
        except InvalidEvent:
            continue
        if source is None or event.envelope.source == source:
            events.append(event)
    return events


def last_pipelines(events: list[Event]) -> dict[str, PipelineDefinition]:
    """The pipeline last applied for each service."""
    return {event.data.service: PipelineDefinition.model_validate(event.data.definition)
            for event in events if isinstance(event.data, PipelineApplied)}


async def rebuild(handlers) -> dict[str, int]:
    """Rebuild the deployer's schema (just created, empty) from the topics and the drivers; what was rebuilt."""
    runtime = handlers.runtime
    settings = runtime.settings
    own = parsed(await read_topics(settings, (topics.DEPLOYMENTS,)), SOURCE)
    pipelines = last_pipelines(parsed(await read_topics(settings, (topics.PIPELINES,))))
    again = parsed(await read_topics(settings, ORDER_TOPICS, since_committed=True))
    folded = fold(own)
    redelivered = {event.id: event for event in again if event.id in folded.deployments}
    async with runtime.pool.acquire() as conn, conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(hashtext('deployer:ports'))")
        report = await _save(conn, handlers, folded, pipelines, redelivered)
    log.warning("deployer.rebuilt", **report)
    return report


async def _save(conn: asyncpg.Connection, handlers, folded: Folded, pipelines: dict[str, PipelineDefinition],
                redelivered: dict[str, Event]) -> dict[str, int]:
    report = {"deployments": 0, "environments": 0, "canaries": 0, "resumed": 0, "redelivered_done": 0}
    for deployment in folded.deployments.values():
        target = deployment.target
        await conn.execute(
            "insert into deployments (deployment_id, service, env, version, digest, config_version, purpose, "
            "status, reason, finished_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "case when $8 = 'started' then null else now() end)",
            target.deployment_id, target.service, target.env, target.version, target.digest, target.config_version,
            target.purpose, deployment.status, deployment.reason)
        report["deployments"] += 1
        order = redelivered.get(deployment.id)
        if deployment.status != "started":
            if order is not None:  # handed over again after the rebuild: it is done
                await inbox.claim(conn, order)
                report["redelivered_done"] += 1
        elif deployment.canary_in_progress:
            report["canaries"] += await _canary(conn, handlers, folded, deployment, pipelines)
        elif order is None:  # in flight, and its order is behind the committed offset: finished by resume_rebuilt
            strategy = _strategy(pipelines, target)
            await conn.execute(
                "insert into resumes (deployment_id, cause, target, strategy) values ($1, $2, $3, $4)",
                deployment.id, _cause(deployment).to_bytes(), json.dumps(target_json(target)),
                json.dumps(STRATEGY.dump_python(strategy, mode="json")))
            report["resumed"] += 1
    unplaced = []
    for place in folded.places.values():
        unplaced += await _place(conn, handlers, folded, place)
        report["environments"] += 1
    for table, service, env, lane in unplaced:  # ports that no event names, or that another place holds now
        port = await repository.free_port(conn, handlers.port_base)
        if table == "lanes":
            await conn.execute("insert into lanes (service, env, lane, port) values ($1, $2, $3, $4)",
                               service, env, lane, port)
        else:
            await conn.execute(f"insert into {table} (service, env, port) values ($1, $2, $3)", service, env, port)
    for service, pipeline in pipelines.items():
        await repository.set_drift_policies(conn, service, {e.name: e.on_drift for e in pipeline.environments})
    return report


def _cause(deployment: Deployment) -> Event:
    """The event a rebuilt deployment's further events derive from: its first, under the order's id (the
    deployment id), in the order's correlation; so that they carry the ids they would have had."""
    first = deployment.first
    return Event(envelope=first.envelope.model_copy(update={"id": deployment.id}), data=first.data)


def _strategy(pipelines: dict[str, PipelineDefinition], target: Target):
    """The environment's strategy in the pipeline last applied (rolling if it is gone)."""
    pipeline = pipelines.get(target.service)
    if pipeline is None or target.env not in pipeline.environment_names:
        return "rolling"
    return pipeline.environment(target.env).strategy


def _runs(handlers, target: Target, slot: str) -> int | None:
    """The pid of what the driver runs in the slot, if it is this very release (digest and config)."""
    running = handlers.drivers[target.driver].launched(target.service, slot)
    if running is None or not running.alive or running.digest != target.digest \
            or running.config_version != target.config_version:
        return None
    return running.pid


def _columns(release: Target | None) -> tuple:
    """(version, digest, config_version, location) of what a slot or lane row records (all None: nothing)."""
    if release is None:
        return None, None, None, None
    return release.version, release.digest, release.config_version, release.location


async def _place(conn: asyncpg.Connection, handlers, folded: Folded, place: Place) -> list[tuple]:
    """One environment's slot, or route and lanes, and what was promoted there; the rows still owed a port."""
    owed = []
    if place.slot_port is not None and not await _slot(conn, handlers, folded.deployments, place):
        owed.append(("slots", place.service, place.env, None))
    if place.route_port is not None:
        known = place.live in place.lane_ports and place.live in place.lane_releases
        inserted = await conn.fetchval(  # a live lane only where its port and release are known
            "insert into routes (service, env, port, live) values ($1, $2, $3, $4) on conflict do nothing "
            "returning true", place.service, place.env, place.route_port, place.live if known else None)
        if not inserted:
            owed.append(("routes", place.service, place.env, None))
        canaried = {d.lane for d in folded.deployments.values() if d.canary_in_progress
                    and (d.target.service, d.target.env) == (place.service, place.env)}
        for lane in LANES:
            owed += await _lane(conn, handlers, folded.deployments, place, lane, lane in canaried)
    if place.promoted is not None:
        await _promoted(conn, folded.deployments[place.promoted], place)
    return owed


async def _slot(conn: asyncpg.Connection, handlers, deployments: dict[str, Deployment], place: Place) -> bool:
    """A rolling environment's slot on the port it served on, with what last ran there; False if the port is
    another's now."""
    ran = deployments[place.slot_release] if place.slot_release else None
    release = ran.target if ran else None
    pid = await asyncio.to_thread(_runs, handlers, release, place.env) if release else None
    state = ran.status if ran and ran.status != "started" else "empty"
    path = handlers.drivers[release.driver].describe(release) if release else None
    version, digest, config_version, location = _columns(release)
    return bool(await conn.fetchval(
        "insert into slots (service, env, port, pid, version, digest, config_version, artifact_path, state, "
        "location) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) on conflict do nothing returning true",
        place.service, place.env, place.slot_port, pid, version, digest, config_version, path, state, location))


async def _promoted(conn: asyncpg.Connection, promoted: Deployment, place: Place) -> None:
    """What the environment should run (the drift checks' reference): its last verified release."""
    routed = promoted.lane is not None
    slot = lane_slot(place.env, promoted.lane) if routed else place.env
    port = promoted.lane_port if routed else promoted.port
    if port is None:  # a lane whose port no event names (events from before lane_port): nothing to compare
        return
    await repository.save_promoted(conn, promoted.target, slot, port, routed)
    if place.replaced:
        await repository.promoted_replaced(conn, place.service, place.env)


async def _lane(conn: asyncpg.Connection, handlers, deployments: dict[str, Deployment], place: Place, lane: str,
                canaried: bool) -> list[tuple]:
    """One lane of a routed environment: the live one runs the promoted release; another with something running
    is warm, retired at once (a rollback to it starts it again); a canary's lane is the canary's (as when live)."""
    port = place.lane_ports.get(lane)
    if port is None:
        return [("lanes", place.service, place.env, lane)]
    release = deployments[place.lane_releases[lane]].target if lane in place.lane_releases else None
    pid = None
    if release is not None and not canaried:
        pid = await asyncio.to_thread(_runs, handlers, release, lane_slot(place.env, lane))
    state = "live" if lane == place.live and release else ("warm" if pid else "empty")
    version, digest, config_version, location = _columns(release)
    inserted = await conn.fetchval(
        "insert into lanes (service, env, lane, port, pid, version, digest, config_version, state, location, "
        "retire_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, case when $9 = 'warm' then now() end) "
        "on conflict do nothing returning true",
        place.service, place.env, lane, port, pid, version, digest, config_version, state, location)
    return [] if inserted else [("lanes", place.service, place.env, lane)]


async def _canary(conn: asyncpg.Connection, handlers, folded: Folded, deployment: Deployment,
                  pipelines: dict[str, PipelineDefinition]) -> int:
    """A canary in progress, at the step its last deployment.progressed names: to be published again and judged
    afresh (paused if it was). 0 if the pipeline no longer gives it a canary strategy (then it is resumed as a
    deployment with the pipeline's strategy)."""
    target, progressed = deployment.target, deployment.progressed
    assert progressed is not None and deployment.lane is not None
    strategy = _strategy(pipelines, target)
    if not isinstance(strategy, Canary) or len(strategy.steps) != progressed.steps:
        await conn.execute("insert into resumes (deployment_id, cause, target, strategy) values ($1, $2, $3, $4)",
                           deployment.id, _cause(deployment).to_bytes(), json.dumps(target_json(target)),
                           json.dumps(STRATEGY.dump_python(strategy, mode="json")))
        return 0
    pid = await asyncio.to_thread(_runs, handlers, target, lane_slot(target.env, deployment.lane))
    await conn.execute(
        "insert into canaries (deployment_id, service, env, order_event, target, strategy, lane, serving, pid, "
        "step, checks, state, lane_port) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        deployment.id, target.service, target.env, _cause(deployment).to_bytes(), json.dumps(target_json(target)),
        json.dumps(STRATEGY.dump_python(strategy, mode="json")), deployment.lane, progressed.serving, pid,
        progressed.step - 1,
        json.dumps(progressed.checks), "paused" if progressed.state == "paused" else "running",
        progressed.lane_port)
    return 1


async def resume_rebuilt(handlers) -> float:
    """Finish the deployments a rebuild found in flight whose orders will not come again; seconds to the next look."""
    runtime = handlers.runtime
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch("select * from resumes order by deployment_id limit 20")
    for row in rows:
        cause = parse_event(bytes(row["cause"]))
        target = target_from_json(json.loads(row["target"]))
        strategy = json.loads(row["strategy"])
        await handlers.resume(cause, target, strategy)
        async with runtime.pool.acquire() as conn:
            await conn.execute("delete from resumes where deployment_id = $1", row["deployment_id"])
        log.info("deployment.resumed", deployment_id=row["deployment_id"], env=target.env)
    return 1.0 if rows else 30.0
