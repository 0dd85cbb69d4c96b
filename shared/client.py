"""Client side of the bus, for the CLI, CI scripts and tests: publish events, await events.

`EventWatcher` reads topics from their current end without a consumer group, so
waiting for an outcome is awaiting an event, never sleeping.
"""

import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from shared import topics
from shared.events import Event, InvalidEvent, parse_event


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



async def group_lag(bootstrap: str, groups: Iterable[str], topic_names: Iterable[str]) -> dict[str, int]:
    """Records not yet consumed, per consumer group, over the named topics that the group reads."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
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

class Publisher:
    """An idempotent producer (acks=all) that waits for every publish to be acknowledged."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                          request_timeout_ms=10_000)
        self._bootstrap = bootstrap

    async def __aenter__(self) -> "Publisher":
        await start_client(self._producer, self._bootstrap)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._producer.stop()

    async def publish(self, event: Event) -> None:
        """Send one event to its topic, keyed by service."""
        await self._producer.send_and_wait(event.data.topic, event.to_bytes(), key=event.data.service.encode())

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None,
                          headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send bytes as they are (tests use it for malformed input)."""
        await self._producer.send_and_wait(topic, value, key=key, headers=headers)


class EventWatcher:
    """Collects every event published on `topic_names` after `start()`, and waits for matches."""

    def __init__(self, bootstrap: str, topic_names: Iterable[str] | None = None) -> None:
        self._bootstrap = bootstrap
        self._topics = list(topic_names or [t.name for t in topics.ALL_TOPICS if t.name != topics.DLQ])
        self._consumer: AIOKafkaConsumer | None = None
        self.events: list[Event] = []
        self.records: list = []

    async def __aenter__(self) -> "EventWatcher":
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                                          auto_offset_reset="earliest")
        await start_client(self._consumer, self._bootstrap)
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
                    self.events.append(parse_event(record.value))
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

