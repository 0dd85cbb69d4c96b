"""Client side of the bus, for the CLI, CI scripts and tests: publish events, await events.

`EventWatcher` reads topics from their current end without a consumer group, so
waiting for an outcome is awaiting an event, never sleeping.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ClusterAuthorizationFailedError, KafkaConnectionError, TopicAuthorizationFailedError

from shared.contracts import topics
from shared.platform.credentials import kafka_options
from shared.contracts.events import Event, InvalidEvent
from shared.contracts.kafka_binding import parse_kafka_event
from shared.platform.settings import Settings


class BusUnavailable(Exception):
    """Kafka could not be reached."""


def unreachable(bootstrap: str) -> BusUnavailable:
    """The one-line error for a broker that does not answer."""
    return BusUnavailable(f"cannot reach Kafka at {bootstrap} (is the stack up? ./dev-stack up)")


async def start_client(client: AIOKafkaConsumer | AIOKafkaProducer, bootstrap: str) -> None:
    """Start an aiokafka client; a broker that does not answer becomes BusUnavailable (and the client is stopped)."""
    try:
        await client.start()
    except KafkaConnectionError:
        await client.stop()
        raise unreachable(bootstrap) from None


async def partitions_of(consumer: AIOKafkaConsumer, topic_names: Iterable[str]) -> list[TopicPartition]:
    """Every partition of the named topics that exist, in topic then partition order."""
    # aiokafka has no public call for "partitions of these topics" on an unsubscribed consumer.
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for topic in topic_names for p in sorted(cluster.partitions_for_topic(topic) or ())]


async def read_range(consumer: AIOKafkaConsumer, plan: dict[TopicPartition, tuple[int, int]],
                     stall_s: float = 30.0) -> AsyncIterator:
    """Every record of `plan` ({partition: (first, last) offset, inclusive}), each partition in offset order, on a
    consumer without a group; TimeoutError when Kafka delivers nothing for `stall_s` with records left."""
    if not plan:
        return
    consumer.assign(list(plan))
    for tp, (first, _) in plan.items():
        consumer.seek(tp, first)
    remaining = set(plan)
    last_progress = time.monotonic()
    while remaining:
        batches = await consumer.getmany(*remaining, timeout_ms=1000)
        if not batches and time.monotonic() - last_progress > stall_s:
            raise TimeoutError(f"Kafka delivered nothing for {stall_s:.0f} s with {len(remaining)} partition(s) "
                               "left to read")
        for tp, batch in batches.items():
            last_progress = time.monotonic()
            for record in batch:
                if record.offset <= plan[tp][1]:
                    yield record
            if await consumer.position(tp) > plan[tp][1]:
                remaining.discard(tp)
                consumer.pause(tp)


async def group_lag(settings: Settings, groups: Iterable[str], topic_names: Iterable[str]) -> dict[str, int]:
    """Records not yet consumed, per consumer group, over the named topics that the group reads (as admin)."""
    options = kafka_options(settings, topics.ADMIN)
    admin = AIOKafkaAdminClient(**options)
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic_names)
        end = await consumer.end_offsets(tps)
        lag = {}
        for group in groups:
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            # The group's topics: those where it committed anything (each service reads a subset).
            mine = {tp.topic for tp, meta in committed.items() if meta.offset >= 0}
            lag[group] = sum(max(0, end[tp] - max(meta.offset, 0))
                             for tp, meta in committed.items() if tp.topic in mine)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


def external_owner(topic: str) -> str:
    """The principal outside the services that produces to `topic` (ci or api); KeyError if none."""
    for candidate in topics.PRINCIPALS:
        if topic in candidate.produces and candidate not in topics.SERVICE_PRINCIPALS:
            return candidate.name
    raise KeyError(f"no principal outside the services may produce to {topic}")


class NotAuthorized(Exception):
    """The broker refused a principal an operation; the message names both."""


class Publisher:
    """Idempotent producers (acks=all) that wait for every publish to be acknowledged.

    Each publish goes out as `principal` if one was given, else as the principal that owns the
    event's topic outside the services (`ci` for builds and evidence, `api` for operator decisions).
    """

    def __init__(self, settings: Settings, principal: str | None = None) -> None:
        self._settings = settings
        self._principal = principal
        self._producers: dict[str, AIOKafkaProducer] = {}
        self._starting = asyncio.Lock()  # concurrent first publishes must not each start a producer

    async def __aenter__(self) -> "Publisher":
        if self._principal is not None:
            await self._producer(self._principal)
        return self

    async def __aexit__(self, *exc) -> None:
        for producer in self._producers.values():
            await producer.stop()

    async def _producer(self, principal: str) -> AIOKafkaProducer:
        if principal in self._producers:
            return self._producers[principal]
        async with self._starting:
            if principal not in self._producers:
                producer = AIOKafkaProducer(**kafka_options(self._settings, principal), acks="all",
                                            enable_idempotence=True, request_timeout_ms=10_000)
                await start_client(producer, self._settings.kafka_bootstrap)
                self._producers[principal] = producer
        return self._producers[principal]

    async def publish(self, event: Event, *, as_principal: str | None = None) -> None:
        """Send one event to its topic, keyed by service."""
        await self.publish_raw(event.data.topic, event.to_bytes(), key=event.data.service.encode(),
                               as_principal=as_principal)

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None,
                          headers: list[tuple[str, bytes]] | None = None, *, as_principal: str | None = None) -> None:
        """Send bytes as they are (tests use it for malformed input); NotAuthorized if the broker refuses."""
        principal = as_principal or self._principal or external_owner(topic)
        producer = await self._producer(principal)
        try:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
        except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as error:
            raise NotAuthorized(f"Kafka refused principal {principal!r} writing to {topic}: "
                                f"{type(error).__name__}") from None


class EventWatcher:
    """Collects every event published on `topic_names` after `start()`, and waits for matches."""

    def __init__(self, settings: Settings, topic_names: Iterable[str] | None = None, principal: str = "api") -> None:
        self._settings = settings
        self._principal = principal
        self._topics = list(topic_names or [t.name for t in topics.ALL_TOPICS if t.name != topics.DLQ])
        self._consumer: AIOKafkaConsumer | None = None
        self.events: list[Event] = []
        self.records: list = []

    async def __aenter__(self) -> "EventWatcher":
        self._consumer = AIOKafkaConsumer(**kafka_options(self._settings, self._principal), enable_auto_commit=False,
                                          auto_offset_reset="earliest")
        await start_client(self._consumer, self._settings.kafka_bootstrap)
        try:
            partitions = await partitions_of(self._consumer, self._topics)
            if not partitions:
                raise BusUnavailable(f"none of the topics {self._topics} exist (is the stack up? ./dev-stack up)")
            self._consumer.assign(partitions)
            await self._consumer.seek_to_end(*partitions)
            for partition in partitions:  # resolve positions now: later events are "after start"
                await self._consumer.position(partition)
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 30.0, what: str = "event") -> Event:
        """The first event seen since start that matches; raises TimeoutError naming `what`."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for event in self.events[checked:]:
                if predicate(event):
                    return event
            checked = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {timeout:.0f} s")
            await self._poll(min(remaining, 0.5))

    async def _poll(self, timeout: float) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000))
        for records in batches.values():
            for record in records:
                self.records.append(record)
                try:
                    self.events.append(parse_kafka_event(record.headers, record.value or b""))
                except InvalidEvent:
                    pass

    def seen(self, predicate: Callable[[Event], bool]) -> list[Event]:
        """Every event seen so far that matches."""
        return [event for event in self.events if predicate(event)]


def matches(event_type: str, **fields) -> Callable[[Event], bool]:
    """A predicate: the event has this type and these data fields."""
    def check(event: Event) -> bool:
        return event.envelope.type == event_type and all(
            getattr(event.data, name, None) == value for name, value in fields.items()
        )
    return check

