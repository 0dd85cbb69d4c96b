"""Records as they come from Kafka and go back: a batch as fetched (the record FastStream handed over and what the
consumer had already fetched behind it), one record of it run on its own, the rewind that reads records again, the
lane a record runs in, and the parse every consumer (and a replay) applies. Split out of shared/platform/consumer.py,
whose RecordRunner applies the policy (retries, dead letters, batches in one transaction) to them."""

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from shared.contracts import kafka_binding
from shared.contracts.events import Event
from shared.contracts.limits import MAX_CLOCK_SKEW_S

log = structlog.get_logger()

Lane = Callable[[object], str | None]
"""Within one key (a promoted service), the lane a raw record runs in (None: the whole key's, in order with
every lane): records of different lanes run side by side, each lane's in order."""


def parse_record(record, value: bytes | None = None, max_skew_s: float = MAX_CLOCK_SKEW_S) -> Event:
    """A Kafka record's event, as every consumer (and a replay) judges it: in either content mode (its headers
    say which), on its topic, under its service's key, and not claiming a time more than `max_skew_s` after the
    broker appended it (the topics keep the broker's LogAppendTime, which no producer sets), so a replay years
    later refuses exactly what the live consumer did."""
    appended = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    return kafka_binding.parse_kafka_event(record.headers, record.value or b"" if value is None else value,
                                           record.topic, key=record.key, now=appended, max_skew_s=max_skew_s)


class Fetched:
    """A batch: the record FastStream handed over, plus the records the consumer had already fetched
    behind it (up to a limit), taken without waiting.

    FastStream's own batch subscriber polls with a timeout and then pauses as long when nothing came,
    which costs an idle service CPU and the next record latency; here the consumer's `getone` wakes
    the service, and whatever arrived meanwhile joins the batch. Each partition keeps its order.
    """

    def __init__(self, message, records: tuple) -> None:
        self._message = message
        self.consumer = message.consumer
        self.raw_message = records

    @classmethod
    async def behind(cls, message, limit: int) -> "Fetched":
        records = (message.raw_message,)
        if limit > 1:
            try:
                buffered = await message.consumer.getmany(timeout_ms=0, max_records=limit - 1)
                records += tuple(record for batch in buffered.values() for record in batch)
            except KafkaError as error:  # what was not taken is fetched again later
                log.warning("consumer.getmany_failed", error=str(error))
        return cls(message, records)

    async def ack(self) -> None:
        """Commit what the consumer has handed over (this batch and everything before it)."""
        await self._message.ack()

    async def nack(self) -> None:
        """Read the whole batch again: each of its partitions back to its first record."""
        await rewind(self.consumer, self.raw_message, [False] * len(self.raw_message))


class OneRecord:
    """One record of a batch, run on its own: acknowledging it only marks it done (the batch commits)."""

    def __init__(self, record) -> None:
        self.raw_message = record
        self.body = record.value or b""
        self.done = False

    async def ack(self) -> None:
        self.done = True

    async def nack(self) -> None:
        self.done = False


def segments(records: Sequence, indexes: list[int], lane: Lane | None) -> list[list[list[int]]]:
    """A key's records cut where one of no lane stands: each segment as its lanes' record indexes (in order)."""
    if lane is None:
        return [[indexes]]
    segments: list[list[list[int]]] = []
    lanes: dict[str, list[int]] = {}
    for index in indexes:
        name = lane(records[index])
        if name is None:
            if lanes:
                segments.append(list(lanes.values()))
                lanes = {}
            segments.append([[index]])
        else:
            lanes.setdefault(name, []).append(index)
    if lanes:
        segments.append(list(lanes.values()))
    return segments


def environment_lane(record) -> str | None:
    """The `data.env` a raw record names (structured or binary CloudEvents), or None: for scheduling only (the
    record is parsed and validated as usual when it runs; one that cannot be read here runs in the whole
    service's lane)."""
    try:
        value = json.loads(record.value)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    data = value.get("data") if "specversion" in value else value
    env = data.get("env") if isinstance(data, dict) else None
    return env if isinstance(env, str) and env else None


async def rewind(consumer, records: Sequence, done: list[bool]) -> None:
    """Seek each partition back to its first record not done, and commit the records done before it.

    Records done after it (another key's) are read again too: their handlers see their ids again
    and do nothing."""
    first: dict[TopicPartition, int] = {}
    for record, finished in zip(records, done):
        if not finished:
            first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
    committed: dict[TopicPartition, int] = {}
    for record, finished in zip(records, done):
        partition = TopicPartition(record.topic, record.partition)
        if finished and record.offset < first.get(partition, record.offset + 1):
            committed[partition] = record.offset + 1
    if committed:
        await consumer.commit(committed)
    for partition, offset in first.items():
        consumer.seek(partition, offset)
