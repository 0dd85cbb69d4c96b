"""Dead letters: list the records of `promotion.dlq` and resubmit one to the topic it came from.

Dead letters are read without a consumer group, so looking commits nothing. A dead letter's
ID is `<partition>:<offset>` on `promotion.dlq`; its `dlq.*` headers say where it came from, and it
keeps the original's `ce_` and `content-type` headers (a binary-mode event's envelope), which a
resubmission sends again.
"""

import base64
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import RecordMetadata

from shared.contracts import topics
from shared.platform.client import partitions_of, start_client, unreachable
from shared.platform.credentials import kafka_options
from shared.contracts.kafka_binding import CONTENT_TYPE, is_binding_header
from shared.platform.settings import Settings

READ_TIMEOUT_S = 10.0

RESUBMIT_ROLE = "admin"
"""The role resubmitting a dead letter needs, in every environment."""


class DeadLetterError(Exception):
    """A dead letter that does not exist or may not be resubmitted; `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DeadLetter:
    """One record of `promotion.dlq`: the original key and bytes, its ce_ and content-type headers, and the
    dlq.* headers."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def id(self) -> str:
        """`<partition>:<offset>` on promotion.dlq."""
        return f"{self.partition}:{self.offset}"

    @property
    def source(self) -> str:
        """Where the consumer read the original record: `topic partition:offset`."""
        return f"{self.headers.get('dlq.topic', '?')} {self.headers.get('dlq.partition', '?')}:" \
               f"{self.headers.get('dlq.offset', '?')}"

    def binding_headers(self) -> list[tuple[str, bytes]]:
        """The original record's ce_ and content-type headers (in binary mode its envelope), as it had them.

        An empty content-type means none: the dead-letter producer writes one on every record."""
        return [(name, value.encode()) for name, value in self.headers.items()
                if is_binding_header(name) and (value or name != CONTENT_TYPE)]

    def text(self) -> str:
        """The bytes as text (invalid UTF-8 replaced)."""
        return self.value.decode("utf-8", errors="replace")

    def preview(self, width: int = 40) -> str:
        """The start of the bytes on one line."""
        text = self.text()
        return "".join(c if c.isprintable() else "·" for c in text[:width]) + ("…" if len(text) > width else "")

    def to_json(self) -> dict:
        """The dead letter for --json output, its value as text and as base64."""
        return {"id": self.id, "time": self.headers.get("dlq.at"), "consumer": self.headers.get("dlq.consumer"),
                "source": {"topic": self.headers.get("dlq.topic"), "partition": _int(self.headers.get("dlq.partition")),
                           "offset": _int(self.headers.get("dlq.offset"))},
                "key": self.key.decode("utf-8", errors="replace") if self.key is not None else None,
                "size": len(self.value), "reason": self.headers.get("dlq.reason"), "headers": self.headers,
                "value_text": self.text(), "value_base64": base64.b64encode(self.value).decode()}


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


async def _open(settings: Settings) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer without a group, and the dead-letter topic's partitions."""
    consumer = AIOKafkaConsumer(**kafka_options(settings, "api"), enable_auto_commit=False)
    await start_client(consumer, settings.kafka_bootstrap)
    try:
        partitions = await partitions_of(consumer, [topics.DLQ])
    except KafkaConnectionError:
        await consumer.stop()
        raise unreachable(settings.kafka_bootstrap) from None
    if not partitions:
        await consumer.stop()
        raise DeadLetterError(f"topic {topics.DLQ} does not exist (is the stack up? ./dev-stack up)", 503)
    consumer.assign(partitions)
    return consumer, partitions


async def _read(consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int],
                ends: dict[TopicPartition, int]) -> list[DeadLetter]:
    """The records from `starts` (inclusive) to `ends` (exclusive) of each partition."""
    pending = {tp: end for tp, end in ends.items() if starts[tp] < end}
    for tp in pending:
        consumer.seek(tp, starts[tp])
    letters: list[DeadLetter] = []
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=int(READ_TIMEOUT_S * 1000))
        if not batches:
            raise TimeoutError(f"{topics.DLQ} delivered nothing within {READ_TIMEOUT_S:.0f} s")
        for tp, records in batches.items():
            letters += [_letter(record) for record in records if record.offset < pending.get(tp, -1)]
            if tp in pending and await consumer.position(tp) >= pending[tp]:
                del pending[tp]
    return letters


def _letter(record) -> DeadLetter:
    headers = {name: (value or b"").decode("utf-8", errors="replace") for name, value in record.headers}
    return DeadLetter(record.partition, record.offset, record.key, record.value or b"", headers)


async def read_dead_letters(settings: Settings, limit: int) -> list[DeadLetter]:
    """The last `limit` dead letters, oldest first."""
    consumer, partitions = await _open(settings)
    try:
        firsts, ends = await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)
        letters = await _read(consumer, {tp: max(firsts[tp], ends[tp] - limit) for tp in partitions}, ends)
    finally:
        await consumer.stop()
    letters.sort(key=lambda letter: (letter.headers.get("dlq.at", ""), letter.partition, letter.offset))
    return letters[-limit:] if limit > 0 else []


async def read_dead_letter(settings: Settings, letter_id: str) -> DeadLetter:
    """The dead letter with this ID, or DeadLetterError."""
    partition, _, offset = letter_id.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise DeadLetterError(f"{letter_id!r} is not a dead letter ID: expected PARTITION:OFFSET, e.g. 0:42", 400)
    missing = DeadLetterError(f"no dead letter {letter_id} (promote dlq list shows them)")
    consumer, partitions = await _open(settings)
    try:
        tp = TopicPartition(topics.DLQ, int(partition))
        if tp not in partitions:
            raise missing
        first, end = (await consumer.beginning_offsets([tp]))[tp], (await consumer.end_offsets([tp]))[tp]
        if not first <= int(offset) < end:
            raise missing
        found = [letter for letter in await _read(consumer, {tp: int(offset)}, {tp: int(offset) + 1})
                 if letter.offset == int(offset)]
    finally:
        await consumer.stop()
    if not found:
        raise missing
    return found[0]


async def resubmit(settings: Settings, letter: DeadLetter, who: str) -> RecordMetadata:
    """Publish the original key, bytes and binding headers to the original topic; return where the broker
    stored them."""
    topic = letter.headers.get("dlq.topic")
    if not topic or topic == topics.DLQ:
        raise DeadLetterError(f"dead letter {letter.id} does not say which topic it came from (no dlq.topic header)",
                              409)
    if topic not in topics.principal("api").produces:
        raise DeadLetterError(f"dead letter {letter.id} came from {topic}, which only its producer may write to "
                              f"(operators resubmit {' and '.join(topics.principal('api').produces)}): "
                              "publish it again there", 403)
    if altered := letter.headers.get("dlq.headers-altered"):
        raise DeadLetterError(f"dead letter {letter.id} could not keep its headers {altered} as they were (repeated, "
                              "null or not UTF-8): publish a corrected event there instead", 409)
    producer = AIOKafkaProducer(**kafka_options(settings, "api"), acks="all", enable_idempotence=True,
                                request_timeout_ms=10_000)
    await start_client(producer, settings.kafka_bootstrap)
    try:
        headers = [*letter.binding_headers(), ("dlq.replayed-from", letter.id.encode()),
                   ("dlq.replayed-by", who.encode())]
        return await producer.send_and_wait(topic, letter.value, key=letter.key, headers=headers)
    finally:
        await producer.stop()


