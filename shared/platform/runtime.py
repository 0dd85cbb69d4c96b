"""What every service process shares: broker, database pool, outbox relay, health, lifecycle.

A service builds a `ServiceRuntime`, registers one consumer (all its topics, so its
handlers run one at a time, in order) and its publishers, and runs `runtime.app`.
Nothing connects at import time; connections open in the app's startup hook.
"""

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import structlog
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from faststream.security import BaseSecurity, SASLScram512
from faststream.specification import AsyncAPI

from shared.platform.consumer import Fetched, Handler, Lane, Prepare, RecordRunner, UnitOfWork
from shared.platform.credentials import database_dsn, kafka_login, kafka_options
from shared.platform.db import COMMON_MIGRATION_NAME, connect, migrate
from shared.platform.backoff import Backoff
from shared.contracts.events import Event, EventData, new_event
from shared.platform import inbox
from shared.platform.health import HealthServer, serve_health
from shared.platform.logging import configure_logging, library_logger
from shared.platform.outbox import OutboxRelay, enqueue
from shared.platform.rebuild import rewind_group
from shared.platform.settings import Settings

log = structlog.get_logger()

Work = Callable[[asyncpg.Connection], Awaitable[list[Event]]]


def derived_id(key: bytes | None, name: str) -> str:
    """The id of an event derived from `name` (what caused it): a re-run reproduces it, and without the service's
    key nobody can predict it (HMAC-SHA256, shown as a UUID). No key (unit tests): a plain uuid5."""
    if key is None:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    return str(uuid.UUID(bytes=hmac.new(key, name.encode(), hashlib.sha256).digest()[:16]))


async def _raw_body(message):
    """Keep the record's bytes as they are: our runner parses them, so bad input can be dead-lettered."""
    return message.body


class ServiceRuntime:
    """Owns the connections of one service process and the way it consumes and emits events."""

    def __init__(self, name: str, settings: Settings | None = None, *, migrations_package: str | None = None) -> None:
        self.name = name
        self.settings = settings or Settings()
        # Several instances of a service share its consumer group; each has a stable identity
        # (static membership), so a restarted instance takes its partitions back at once.
        self.instance = self.settings.instance
        self.topic_names: list[str] = []
        self.migrations_package = migrations_package or f"services.{name}"
        self.broker = KafkaBroker(
            self.settings.kafka_bootstrap,
            security=self._security(),
            client_id=f"{name}-{self.instance}",
            enable_idempotence=True,
            acks="all",
            logger=library_logger(f"faststream.{name}", logging.WARNING),  # not a line per message
        )
        self.app = FastStream(
            self.broker,
            logger=library_logger("faststream.app"),
            on_startup=[self._start],
            on_shutdown=[self._stop],
            specification=AsyncAPI(self.broker, title=f"promote {name}", version="0.1.0"),
        )
        self._id_key = (self.settings.event_id_key.get_secret_value().encode()
                        if self.settings.event_id_key is not None else None)
        self.pool: asyncpg.Pool | None = None
        self.pool_size = 4
        self.relay: OutboxRelay | None = None
        self.runners: list[RecordRunner] = []
        self._tasks: list[asyncio.Task] = []
        self.background_errors: dict[str, str] = {}
        """What a background task is failing with right now, by task name (shown on /health)."""
        self._background: list[tuple[str, Callable[[], Awaitable[float]]]] = []
        self.rebuild: Callable[[], Awaitable[object]] | None = None
        """How the service rebuilds its state when its schema is new; None: read its topics again from their
        start (shared/platform/rebuild.py). The deployer rebuilds from its own events instead (deployer/recovery.py)."""
        self._health_server: HealthServer | None = None
        self._started_at = time.monotonic()

    def _security(self) -> BaseSecurity | None:
        """SCRAM-SHA-512 as this service's own principal (none configured: the AsyncAPI generator needs no login)."""
        if self.settings.kafka_username is None:
            return None
        username, password = kafka_login(self.settings)
        return SASLScram512(username, password, use_ssl=self.settings.kafka_security_protocol == "SASL_SSL")

    def consume(self, topic_names: list[str], handler: Handler, *, description: str, together: bool = True,
                services_at_once: int = 1, lane: Lane | None = None, prepare: Prepare | None = None,
                stuck_after_s: float | None = None) -> None:
        """Subscribe the service's consumer group to `topic_names`, committing only after `handler`.

        `together`: the handler keeps every effect in the database (through `once`), so a batch of
        records can run in one transaction. A handler with effects outside it (the deployer starts
        processes) passes False: its records run one by one, and only the offset commit is shared;
        with `services_at_once` > 1 the records of up to that many promoted services run at once
        (each service's in order), and the pool grows so that each of them can hold two connections;
        `lane(record)` lets a service's records of different lanes (the deployer: environments) run side by
        side too, up to the same number at once.
        `prepare(events)` runs before a batch's transaction, for work that need not hold it.
        `stuck_after_s`: how long one handler (or `prepare`) may run before /health says degraded
        (default: the handler_stuck_after_s setting).
        """
        runner = RecordRunner(self.name, handler, self.publish_raw, together=self.together if together else None,
                              keys_at_once=1 if together else services_at_once, lane=lane, prepare=prepare,
                              stuck_after_s=stuck_after_s or self.settings.handler_stuck_after_s,
                              max_clock_skew_s=self.settings.max_clock_skew_s)
        self.pool_size = max(self.pool_size, 2 * services_at_once + 2)
        self.runners.append(runner)
        self.topic_names += topic_names
        # The topics are part of the static identity: a static member rejoining under a known id gets its cached
        # assignment back without a rebalance, even when it now subscribes to more topics (seen: the deployer,
        # newly subscribed to promotion.operations, was never assigned its partitions). Other topics, another
        # member: the old one's partitions move once, after the session timeout.
        subscription = hashlib.sha256(",".join(sorted(topic_names)).encode()).hexdigest()[:8]

        @self.broker.subscriber(
            *topic_names,
            group_id=self.name,
            group_instance_id=f"{self.name}-{self.instance}-{subscription}",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            decoder=_raw_body,
            max_poll_interval_ms=int(self.settings.kafka_max_poll_interval_s * 1000),
            title=f"{self.name}:consume",
            description=description,
        )
        async def on_record(message: KafkaMessage) -> None:
            try:
                await runner.run_batch(await Fetched.behind(message, self.settings.consumer_batch))
            finally:  # one batch's log context never leaks into the next
                structlog.contextvars.clear_contextvars()
                structlog.contextvars.bind_contextvars(service=self.name)

    def background(self, name: str, step: Callable[[], Awaitable[float]]) -> None:
        """Run `step()` over and over alongside the consumer once the database is ready, sleeping the
        seconds it returns in between; cancelled at shutdown. A failing step is retried with backoff
        (0.2 s doubling to 5 s) and its error shown on /health until a step succeeds again."""
        self._background.append((name, step))

    async def _repeat(self, name: str, step: Callable[[], Awaitable[float]]) -> None:
        backoff = Backoff(0.2)
        while True:
            try:
                pause = await step()
                self.background_errors.pop(name, None)
                backoff.succeeded()
            except Exception as error:  # retried: a background step's work is kept in the database
                self.background_errors[name] = f"{type(error).__name__}: {error}"
                pause = backoff.failed()
                log.warning("background.failed", task=name, error=self.background_errors[name], retry_in=pause)
            await asyncio.sleep(pause)

    def emits(self, *models: type[EventData]) -> None:
        """Declare the events this service publishes (they appear in its AsyncAPI document)."""
        for model in models:
            self.broker.publisher(
                model.topic,
                title=f"{self.name}:{model.event_type}",
                description=(model.__doc__ or "").strip(),
                schema=model,
            )

    async def once(self, event: Event, work: Work, unit: UnitOfWork | None = None) -> bool:
        """Run `work` and store its events in the outbox in one transaction, once per event id.

        In a unit of work with a transaction (a batch of records, see `together`) that transaction is it;
        otherwise the transaction is a unit of this one event (at the unit's record position, if any)."""
        if unit is None or unit.conn is None:
            async with self.together([event]) as own:
                own.position = unit.position if unit is not None else None
                return await self.once(event, work, own)
        if not await inbox.claim(unit.conn, event):
            log.info("event.duplicate_ignored")
            return False
        emitted = await work(unit.conn)
        await enqueue(unit.conn, emitted)
        unit.emitted += emitted
        return True

    @asynccontextmanager
    async def together(self, events: list[Event]) -> AsyncIterator[UnitOfWork]:
        """One transaction for the handlers of `events` (a batch of records), as the unit of work they are handed:
        `once` with that unit joins it.

        One subject (promoted service) at a time across this service's instances: two instances
        judging facts of one subject from different partitions must not each miss the other's
        uncommitted fact (e.g. a promotion request and its artifact's registration). So the subject
        locks of every event are taken first, sorted, so that two instances never wait on each other
        in a cycle; the emitted events reach the relay when the transaction commits.
        """
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            subjects = sorted({self.subject_lock(event.data.service) for event in events})
            await conn.execute(
                "select count(pg_advisory_xact_lock(hashtext(k))) from (select unnest($1::text[]) as k order by 1) s",
                subjects,
            )
            unit = UnitOfWork(conn)
            yield unit
        self.committed(unit.emitted)

    def committed(self, emitted: list[Event]) -> None:
        """Events just committed to the outbox: wake the relay, and log each."""
        if emitted:
            assert self.relay is not None
            self.relay.wake()
        for out in emitted:
            log.info("event.emitted", emitted_type=out.envelope.type, emitted_id=out.id)

    def subject_lock(self, subject: str) -> str:
        """The advisory-lock key that serialises this service's work on one subject (a promoted service)."""
        return f"{self.name}:subject:{subject}"

    def event(self, data: EventData, cause: Event, index: int = 0) -> Event:
        """An event caused by `cause`, with an id that a re-run (or a rebuild) reproduces.

        Events that happen once per subject (`once_per` fields, e.g. one gate.passed per release and
        environment) take their id from those fields: a rebuild that reaches the same verdict through
        another order of inputs still emits the same id, which consumers then ignore. Others take
        theirs from the cause.
        """
        return self._identified(data, f"{cause.id}/{self.name}/{data.event_type}/{index}", cause.correlation_id)

    def timed_event(self, data: EventData, timer: str, index: int = 0, *, correlation_id: str | None = None) -> Event:
        """An event a durable timer or a watch emits, with no cause: its id derives from `timer` (what and when it
        was due), so a timer that fires again after a crash emits the same id; `correlation_id`: the chain it
        belongs to, if any (a time gate's verdict: its promotion's). `once_per` ids as in `event`."""
        return self._identified(data, f"{timer}/{self.name}/{data.event_type}/{index}", correlation_id)

    def _identified(self, data: EventData, name: str, correlation_id: str | None) -> Event:
        if data.once_per:
            name = "/".join([data.event_type, *(str(getattr(data, field)) for field in data.once_per)])
        return new_event(data, source=f"/promote/{self.name}", correlation_id=correlation_id,
                         event_id=derived_id(self._id_key, name))

    def events(self, datas: list[EventData], cause: Event) -> list[Event]:
        """`event` for each item, numbered so that two of one type get distinct ids."""
        return [self.event(data, cause, index) for index, data in enumerate(datas)]

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        """Publish bytes as they are and wait for the broker's acknowledgement."""
        await self.broker.publish(value, topic=topic, key=key, headers=headers)

    async def _send_event_bytes(self, topic: str, key: bytes, payload: bytes) -> asyncio.Future:
        """Hand an outbox row to the producer; the relay awaits the returned acknowledgement."""
        return await self.broker.publish(payload, topic=topic, key=key, no_confirm=True,
                                         headers={"content-type": "application/cloudevents+json"})

    async def _start(self) -> None:
        configure_logging(self.name)
        if self._id_key is None:
            raise RuntimeError("PROMOTE_EVENT_ID_KEY is not set: without it the ids of this service's events "
                               "could be predicted (and squatted) by anyone")
        self.pool = await connect(database_dsn(self.settings), self.name, max_size=self.pool_size)
        applied = await migrate(self.pool, self.name, self.migrations_package)
        log.info("service.starting", migrations_applied=applied, instance=self.instance)
        if COMMON_MIGRATION_NAME in applied and self.rebuild is not None:  # a new schema: its own way
            await self.rebuild()
        elif COMMON_MIGRATION_NAME in applied:  # a new schema: rebuild the state from the topics
            await rewind_group(kafka_options(self.settings), self.name, self.topic_names)
        self.relay = OutboxRelay(self.pool, self._send_event_bytes, service=self.name)
        self._tasks.append(asyncio.create_task(self._run_relay_when_connected()))
        self._tasks += [asyncio.create_task(self._repeat(name, step)) for name, step in self._background]
        port = self.settings.health_port
        if port:
            self._health_server = await serve_health(port, self.health)

    async def _run_relay_when_connected(self) -> None:
        # The broker connects after the startup hooks; publish only once it is up.
        while not self.broker.running:
            await asyncio.sleep(0.05)
        assert self.relay is not None
        await self.relay.run()

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._health_server:
            await self._health_server.close()
        if self.pool:
            await self.pool.close()
        log.info("service.stopped")

    async def health(self) -> dict:
        """Liveness, the reachability of Kafka and PostgreSQL, and the figures an operator looks at first."""
        failing = [r.last_error for r in self.runners if r.failing_since and time.monotonic() - r.failing_since > 5]
        now = time.monotonic()
        stuck = [f"a handler has run for {took:.0f} s (limit {r.stuck_after_s:g} s)"
                 for r in self.runners if (took := r.running_for(now)) > r.stuck_after_s]
        relay_error = self.relay.last_error if self.relay else "not started"
        background_error = next(iter(self.background_errors.values()), None)
        kafka, database = await asyncio.gather(self._kafka_reachable(), self._database_reachable())
        body = {
            "service": self.name,
            "instance": self.instance,
            "status": "degraded" if stuck or failing or relay_error or background_error or not (kafka and database)
            else "ok",
            "kafka": "ok" if kafka else "unreachable",
            "database": "ok" if database else "unreachable",
            "uptime_s": round(time.monotonic() - self._started_at, 1),
            "processed": sum(r.processed for r in self.runners),
            "dead_lettered": sum(r.dead_lettered for r in self.runners),
            "published": self.relay.published if self.relay else 0,
            "consumer_error": failing[0] if failing else None,
            "relay_error": relay_error,
            "background_error": background_error,
            "stuck": stuck[0] if stuck else None,
        }
        return body

    async def _kafka_reachable(self) -> bool:
        try:
            return await self.broker.ping(timeout=1.0)
        except Exception:  # any failure to answer is "unreachable"
            return False

    async def _database_reachable(self) -> bool:
        if self.pool is None:
            return False
        try:
            async with asyncio.timeout(1.0):
                return await self.pool.fetchval("select true")
        except Exception:  # any failure to answer is "unreachable"
            return False
