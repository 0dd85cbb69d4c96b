"""What every service process shares: broker, database pool, outbox relay, health, lifecycle.

A service builds a `ServiceRuntime`, registers one consumer (all its topics, in order, in batches: see
`consume`) and its publishers, and runs `runtime.app`. Nothing connects at import time; connections open in
the app's startup hook. Its seams live beside it: how events are minted (minting.py), background tasks
(background.py), the /health report and its server (health.py), how records run (consumer.py, records.py).
"""

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from faststream.security import BaseSecurity, SASLScram512
from faststream.specification import AsyncAPI

from shared.platform.consumer import Fetched, Handler, Lane, Prepare, RecordRunner, UnitOfWork
from shared.platform.credentials import database_dsn, kafka_login, kafka_options
from shared.platform.db import COMMON_MIGRATION_NAME, connect, migrate
from shared.contracts.events import Event, EventData
from shared.platform import inbox
from shared.platform.background import BackgroundTasks
from shared.platform.health import HealthServer, serve_health, service_report
from shared.platform.minting import EventMint
from shared.platform.logging import configure_logging, library_logger
from shared.platform.outbox import OutboxRelay, enqueue
from shared.platform.rebuild import rewind_group
from shared.platform.settings import Settings

log = structlog.get_logger()

Work = Callable[[asyncpg.Connection], Awaitable[list[Event]]]


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
        self.mint = EventMint(name, self.settings.event_id_key.get_secret_value().encode()
                              if self.settings.event_id_key is not None else None)
        self.pool: asyncpg.Pool | None = None
        self.pool_size = 4
        self.relay: OutboxRelay | None = None
        self.runners: list[RecordRunner] = []
        self._tasks: list[asyncio.Task] = []
        self.background_tasks = BackgroundTasks()
        self.rebuild: Callable[[], Awaitable[object]] | None = None
        """How the service rebuilds its state when its schema is new; None: read its topics again from their
        start (shared/platform/rebuild.py). The deployer rebuilds from its own events instead (deployer/recovery.py)."""
        self._health_server: HealthServer | None = None
        self._producer: AIOKafkaProducer | None = None
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
        self.background_tasks.add(name, step)

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
        """`EventMint.event`: an event caused by `cause`, with an id that a re-run reproduces."""
        return self.mint.event(data, cause, index)

    def timed_event(self, data: EventData, timer: str, index: int = 0, *, correlation_id: str | None = None) -> Event:
        """`EventMint.timed_event`: an event a durable timer or a watch emits, its id derived from `timer`."""
        return self.mint.timed_event(data, timer, index, correlation_id=correlation_id)

    def events(self, datas: list[EventData], cause: Event) -> list[Event]:
        """`EventMint.events`: `event` for each item, numbered."""
        return self.mint.events(datas, cause)

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        """Publish bytes as they are and wait for the broker's acknowledgement."""
        await self.broker.publish(value, topic=topic, key=key, headers=headers)

    async def _send_event_bytes(self, topic: str, key: bytes, payload: bytes) -> asyncio.Future:
        """Hand an outbox row to the relay's producer; the relay awaits the returned acknowledgement."""
        producer = await self._relay_producer()
        return await producer.send(topic, payload, key=key,
                                   headers=[("content-type", b"application/cloudevents+json")])

    async def _relay_producer(self) -> AIOKafkaProducer:
        """The relay's own idempotent producer (acks=all), started on first use; `_renew_producer` replaces it."""
        if self._producer is None:
            options = kafka_options(self.settings) if self.settings.kafka_username is not None else {
                "bootstrap_servers": self.settings.kafka_bootstrap}
            producer = AIOKafkaProducer(**options, client_id=f"{self.name}-{self.instance}-relay",
                                        enable_idempotence=True, acks="all")
            await producer.start()
            self._producer = producer
        return self._producer

    async def _renew_producer(self) -> None:
        """Drop a producer that can no longer send (outbox.STUCK_PRODUCER_ERRORS); the next send starts anew."""
        old, self._producer = self._producer, None
        if old is not None:
            with contextlib.suppress(Exception):  # it is beyond use either way
                await asyncio.wait_for(old.stop(), 5)

    async def _start(self) -> None:
        configure_logging(self.name)
        if self.mint.key is None:
            raise RuntimeError("PROMOTE_EVENT_ID_KEY is not set: without it the ids of this service's events "
                               "could be predicted (and squatted) by anyone")
        self.pool = await connect(database_dsn(self.settings), self.name, max_size=self.pool_size)
        applied = await migrate(self.pool, self.name, self.migrations_package)
        log.info("service.starting", migrations_applied=applied, instance=self.instance)
        if COMMON_MIGRATION_NAME in applied and self.rebuild is not None:  # a new schema: its own way
            await self.rebuild()
        elif COMMON_MIGRATION_NAME in applied:  # a new schema: rebuild the state from the topics
            await rewind_group(kafka_options(self.settings), self.name, self.topic_names)
        self.relay = OutboxRelay(self.pool, self._send_event_bytes, service=self.name, renew=self._renew_producer)
        self._tasks.append(asyncio.create_task(self._run_relay_when_connected()))
        self.background_tasks.start()
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
        self.background_tasks.cancel()
        if self._health_server:
            await self._health_server.close()
        await self._renew_producer()
        if self.pool:
            await self.pool.close()
        log.info("service.stopped")

    async def health(self) -> dict:
        """The /health report (`health.service_report`) of this process."""
        return await service_report(service=self.name, instance=self.instance, started_at=self._started_at,
                                    runners=self.runners, relay=self.relay,
                                    background_errors=self.background_tasks.errors,
                                    kafka_ping=lambda: self.broker.ping(timeout=1.0), pool=self.pool)
