"""Unit tests for shared.platform.consumer.RecordRunner: dead-letter what is invalid, retry what failed, ack the rest.

The runner backs off with asyncio.sleep before every re-read (0.4 s, then 0.8 s, ... for a failing
handler), so the retry tests take a few seconds of real time; they use few deliveries.
"""

import asyncio
import json
from contextlib import asynccontextmanager
import time
from dataclasses import dataclass, field

import pytest
import structlog
from structlog.testing import capture_logs

from shared.contracts import topics
from shared.platform.consumer import Fetched, RecordRunner, UnitOfWork, environment_lane
from shared.platform.records import segments as _segments
from shared.contracts.events import Event, PromotionRequested, new_event

DIGEST = "sha256:" + "a" * 64


@pytest.fixture(autouse=True)
def fresh_log_context():
    """The runner binds the record to structlog's context; the service clears it after each record."""
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@dataclass(frozen=True)
class FakeRecord:
    """The parts of an aiokafka ConsumerRecord the runner reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))
    """When the broker appended it (LogAppendTime), in milliseconds."""
    headers: tuple[tuple[str, bytes | None], ...] = ()
    """(name, value) in order, as aiokafka gives them."""


class Acknowledgeable:
    """Manual acknowledgement that records what was done: "ack" or "nack", in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def ack(self) -> None:
        self.calls.append("ack")

    async def nack(self) -> None:
        self.calls.append("nack")


class FakeMessage(Acknowledgeable):
    """A FastStream KafkaMessage with manual acknowledgement that records what was done to it."""

    def __init__(self, value: bytes, *, topic: str = topics.REQUESTS, partition: int = 2, offset: int = 41,
                 key: bytes | None = b"payments") -> None:
        super().__init__()
        self.body = value
        self.raw_message = FakeRecord(topic, partition, offset, key, value)


class FakePublisher:
    """Stands in for the raw producer: keeps every (topic, key, value, headers) published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes | None, bytes, dict[str, str]]] = []

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        self.published.append((topic, key, value, headers))


class FakeHandler:
    """A handler that records the events it got and raises `error` (if any) every time."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.handled: list[Event] = []

    async def __call__(self, event: Event, unit=None) -> None:
        self.handled.append(event)
        if self.error is not None:
            raise self.error


def a_request_event() -> Event:
    return new_event(PromotionRequested(service="payments", version="1.4.0", digest=DIGEST, env="dev"),
                     source="intake", event_id="evt-1")


def a_runner(handler: FakeHandler, publisher: FakePublisher, max_attempts: int = 3) -> RecordRunner:
    """A runner whose back-off starts at 10 ms, so that retries keep the tests fast."""
    return RecordRunner("gates", handler, publisher.publish_raw, max_attempts=max_attempts, backoff_base_s=0.01)


async def test_invalid_bytes_are_dead_lettered_with_where_they_came_from_then_acknowledged():
    handler, publisher = FakeHandler(), FakePublisher()
    runner = a_runner(handler, publisher)
    message = FakeMessage(b"{not json", topic=topics.REQUESTS, partition=2, offset=41, key=b"payments")
    await runner.run(message)
    assert len(publisher.published) == 1
    topic, key, value, headers = publisher.published[0]
    assert (topic, key, value) == ("promotion.dlq", b"payments", b"{not json")
    assert "invalid envelope" in headers["dlq.reason"]
    assert (headers["dlq.topic"], headers["dlq.partition"], headers["dlq.offset"], headers["dlq.consumer"]) == (
        "promotion.requests", "2", "41", "gates")
    assert headers["dlq.at"]
    assert message.calls == ["ack"]
    assert handler.handled == []
    assert (runner.dead_lettered, runner.processed) == (1, 0)


async def test_a_valid_event_on_the_wrong_topic_is_dead_lettered_without_calling_the_handler():
    handler, publisher = FakeHandler(), FakePublisher()
    message = FakeMessage(a_request_event().to_bytes(), topic=topics.GATES)
    await a_runner(handler, publisher).run(message)
    assert [published[0] for published in publisher.published] == ["promotion.dlq"]
    assert "does not belong on topic 'promotion.gates'" in publisher.published[0][3]["dlq.reason"]
    assert message.calls == ["ack"] and handler.handled == []


async def test_a_valid_event_is_handled_once_then_acknowledged():
    handler, publisher = FakeHandler(), FakePublisher()
    runner = a_runner(handler, publisher)
    event = a_request_event()
    message = FakeMessage(event.to_bytes())
    await runner.run(message)
    assert [handled.id for handled in handler.handled] == ["evt-1"]
    assert handler.handled[0].data == event.data
    assert message.calls == ["ack"]
    assert publisher.published == []
    assert (runner.processed, runner.dead_lettered, runner.last_error) == (1, 0, None)


async def test_a_handler_that_keeps_failing_is_re_read_then_dead_lettered_on_the_last_attempt():
    handler, publisher = FakeHandler(ValueError("no such release")), FakePublisher()
    runner = a_runner(handler, publisher, max_attempts=3)
    raw = a_request_event().to_bytes()
    deliveries = [FakeMessage(raw) for _ in range(3)]  # the same record, read again after each nack
    for delivery in deliveries[:2]:
        await runner.run(delivery)
        assert delivery.calls == ["nack"]
        assert publisher.published == []
    assert runner.last_error == "ValueError: no such release"
    await runner.run(deliveries[2])
    assert deliveries[2].calls == ["ack"]
    assert len(handler.handled) == 3
    assert len(publisher.published) == 1
    topic, _, value, headers = publisher.published[0]
    assert (topic, value) == ("promotion.dlq", raw)
    assert "handler failed 3 times" in headers["dlq.reason"]
    assert "ValueError: no such release" in headers["dlq.reason"]
    assert runner.dead_lettered == 1


async def test_a_technical_fault_is_retried_and_never_dead_lettered():
    # max_attempts=1: a non-technical error would be dead-lettered on the first delivery, so two
    # nacks already prove that technical faults do not count towards max_attempts.
    handler, publisher = FakeHandler(OSError("database unreachable")), FakePublisher()
    runner = a_runner(handler, publisher, max_attempts=1)
    raw = a_request_event().to_bytes()
    deliveries = [FakeMessage(raw) for _ in range(2)]
    for delivery in deliveries:
        await runner.run(delivery)
    assert [delivery.calls for delivery in deliveries] == [["nack"], ["nack"]]
    assert publisher.published == [] and runner.dead_lettered == 0
    assert runner.last_error == "OSError: database unreachable"
    assert runner.failing_since is not None


async def test_a_success_after_a_failure_clears_the_error_shown_on_health():
    handler, publisher = FakeHandler(OSError("database unreachable")), FakePublisher()
    runner = a_runner(handler, publisher)
    raw = a_request_event().to_bytes()
    await runner.run(FakeMessage(raw))
    handler.error = None
    recovered = FakeMessage(raw)
    await runner.run(recovered)
    assert recovered.calls == ["ack"]
    assert (runner.processed, runner.last_error, runner.failing_since) == (1, None, None)


async def test_the_first_failure_of_a_handler_is_logged_as_attempt_one():
    handler, publisher = FakeHandler(ValueError("boom")), FakePublisher()
    with capture_logs() as logs:
        await a_runner(handler, publisher).run(FakeMessage(a_request_event().to_bytes()))
    retries = [entry for entry in logs if entry["event"] == "event.retry"]
    assert [(entry["attempt"], entry["retry_in"]) for entry in retries] == [(1, 0.01)]


async def test_technical_retries_do_not_use_up_the_attempts_of_a_handler_error():
    handler, publisher = FakeHandler(OSError("database unreachable")), FakePublisher()
    runner = a_runner(handler, publisher, max_attempts=2)
    raw = a_request_event().to_bytes()
    await runner.run(FakeMessage(raw))
    handler.error = ValueError("no such release")
    first_real_failure = FakeMessage(raw)
    await runner.run(first_real_failure)
    assert first_real_failure.calls == ["nack"]
    assert publisher.published == []


# Batches: what the consumer fetched, run in one transaction when the service can, record by record otherwise.

class FakeConsumer:
    """The parts of aiokafka's consumer the runner uses to keep what is done and read the rest again."""

    def __init__(self) -> None:
        self.commits: list[dict] = []
        self.seeks: list[tuple] = []

    async def commit(self, offsets: dict) -> None:
        self.commits.append({(tp.topic, tp.partition): offset for tp, offset in offsets.items()})

    def seek(self, partition, offset: int) -> None:
        self.seeks.append(((partition.topic, partition.partition), offset))


class FakeBatch(Acknowledgeable):
    """A batch as the runner gets it (`Fetched`): records grouped by partition, their consumer, and
    manual acknowledgement."""

    def __init__(self, records: list[FakeRecord]) -> None:
        super().__init__()
        self.raw_message = tuple(records)
        self.consumer = FakeConsumer()


class FakeTogether:
    """Stands in for ServiceRuntime.together: notes each transaction, and whether it committed."""

    def __init__(self) -> None:
        self.transactions: list[tuple[list[str], str]] = []

    @asynccontextmanager
    async def __call__(self, events: list[Event]):
        ids = [event.id for event in events]
        try:
            yield UnitOfWork()
        except BaseException:
            self.transactions.append((ids, "rolled back"))
            raise
        self.transactions.append((ids, "committed"))


def request(event_id: str, version: str, service: str = "payments") -> bytes:
    return new_event(PromotionRequested(service=service, version=version, digest=DIGEST, env="dev"),
                     source="intake", event_id=event_id).to_bytes()


def records(*values: bytes, partitions=(0, 0, 1, 1)) -> list[FakeRecord]:
    """Records on promotion.requests: two partitions, each in offset order (as FastStream hands them)."""
    return [FakeRecord(topics.REQUESTS, partition, 10 + index, b"payments", value)
            for index, (partition, value) in enumerate(zip(partitions, values))]


class FailOn(FakeHandler):
    """Fails on the events whose id is in `failing`, handles the others."""

    def __init__(self, *failing: str, error: Exception | None = None) -> None:
        super().__init__()
        self.failing = set(failing)
        self.failure = error or ValueError("no such release")

    async def __call__(self, event: Event, unit=None) -> None:
        self.handled.append(event)
        if event.id in self.failing:
            raise self.failure


async def test_a_batch_runs_in_one_transaction_then_dead_letters_the_invalid_and_commits_once():
    handler, publisher, together = FakeHandler(), FakePublisher(), FakeTogether()
    runner = RecordRunner("gates", handler, publisher.publish_raw, together=together, backoff_base_s=0.01)
    batch = FakeBatch(records(request("a", "1.0.0"), b"{not json", request("b", "1.0.1")))
    await runner.run_batch(batch)
    assert together.transactions == [(["a", "b"], "committed")]
    assert [event.id for event in handler.handled] == ["a", "b"]
    assert [(topic, value) for topic, _, value, _ in publisher.published] == [("promotion.dlq", b"{not json")]
    assert batch.calls == ["ack"] and batch.consumer.commits == [] and batch.consumer.seeks == []
    assert (runner.processed, runner.dead_lettered) == (2, 1)


async def test_a_failing_transaction_keeps_nothing_then_the_records_run_one_by_one():
    handler, publisher, together = FailOn("c"), FakePublisher(), FakeTogether()
    runner = RecordRunner("gates", handler, publisher.publish_raw, together=together, backoff_base_s=0.01)
    batch = FakeBatch(records(request("a", "1.0.0"), b"{not json", request("c", "1.0.2"), request("d", "1.0.3")))
    await runner.run_batch(batch)
    assert together.transactions == [(["a", "c", "d"], "rolled back")]
    # One by one: a handled, the invalid record dead-lettered (once), c failed: a and the dead letter
    # (both on partition 0) are committed, partition 1 is read again from c; d was not reached.
    assert [event.id for event in handler.handled] == ["a", "c", "a", "c"]
    assert [(topic, value) for topic, _, value, _ in publisher.published] == [("promotion.dlq", b"{not json")]
    assert batch.consumer.commits == [{(topics.REQUESTS, 0): 12}]
    assert batch.consumer.seeks == [((topics.REQUESTS, 1), 12)]
    assert batch.calls == []
    assert runner.last_error == "ValueError: no such release"


async def test_a_record_that_keeps_failing_in_a_batch_is_dead_lettered_and_the_rest_handled():
    handler, publisher = FailOn("a"), FakePublisher()
    runner = RecordRunner("gates", handler, publisher.publish_raw, together=FakeTogether(), max_attempts=2,
                          backoff_base_s=0.01)
    values = (request("a", "1.0.0"), request("b", "1.0.1"))
    first, second = FakeBatch(records(*values)), FakeBatch(records(*values))  # read again after the rewind
    await runner.run_batch(first)
    assert first.consumer.seeks == [((topics.REQUESTS, 0), 10)] and first.consumer.commits == []
    await runner.run_batch(second)
    assert [topic for topic, *_ in publisher.published] == ["promotion.dlq"]
    assert "handler failed 2 times" in publisher.published[0][3]["dlq.reason"]
    assert second.calls == ["ack"]
    assert runner.processed == 1


async def test_without_a_shared_transaction_each_record_runs_alone_and_the_batch_commits_once():
    handler, publisher = FakeHandler(), FakePublisher()
    runner = a_runner(handler, publisher)
    batch = FakeBatch(records(request("a", "1.0.0"), request("b", "1.0.1"), request("c", "1.0.2")))
    await runner.run_batch(batch)
    assert [event.id for event in handler.handled] == ["a", "b", "c"]
    assert batch.calls == ["ack"] and batch.consumer.commits == []


async def test_a_batch_of_invalid_records_opens_no_transaction():
    handler, publisher, together = FakeHandler(), FakePublisher(), FakeTogether()
    runner = RecordRunner("gates", handler, publisher.publish_raw, together=together)
    batch = FakeBatch(records(b"{", b"[]"))
    await runner.run_batch(batch)
    assert together.transactions == [] and handler.handled == []
    assert [value for _, _, value, _ in publisher.published] == [b"{", b"[]"]
    assert batch.calls == ["ack"]


def keyed(*items: tuple[str, bytes]) -> list[FakeRecord]:
    """Records on one partition, each (key, value), in offset order from 10."""
    return [FakeRecord(topics.REQUESTS, 0, 10 + index, key.encode(), value)
            for index, (key, value) in enumerate(items)]


async def test_the_records_of_different_services_run_at_once():
    other_handled = asyncio.Event()

    class WaitsForTheOtherService(FakeHandler):
        async def __call__(self, event: Event, unit=None) -> None:
            self.handled.append(event)
            if event.id == "a":  # a (payments) can only finish once b (billing) ran alongside it
                await asyncio.wait_for(other_handled.wait(), timeout=2)
            else:
                other_handled.set()

    handler, publisher = WaitsForTheOtherService(), FakePublisher()
    runner = RecordRunner("deployer", handler, publisher.publish_raw, keys_at_once=2, backoff_base_s=0.01)
    batch = FakeBatch(keyed(("payments", request("a", "1.0.0")), ("billing", request("b", "1.0.1", "billing"))))
    await runner.run_batch(batch)
    assert batch.calls == ["ack"] and runner.processed == 2 and runner.last_error is None


async def test_a_failing_record_stops_its_service_only_and_its_partition_is_read_again_from_there():
    handler, publisher = FailOn("a"), FakePublisher()
    runner = RecordRunner("deployer", handler, publisher.publish_raw, keys_at_once=4, backoff_base_s=0.01)
    batch = FakeBatch(keyed(("payments", request("a", "1.0.0")), ("billing", request("b", "1.0.1", "billing")),
                            ("payments", request("c", "1.0.2"))))
    await runner.run_batch(batch)
    assert sorted(event.id for event in handler.handled) == ["a", "b"]  # c waits behind a, in order
    assert batch.consumer.seeks == [((topics.REQUESTS, 0), 10)]
    assert batch.consumer.commits == []  # b is done, but sits after a: it is read again and skipped then
    assert batch.calls == []


async def test_records_done_before_the_first_failure_of_their_partition_are_committed():
    handler, publisher = FailOn("c"), FakePublisher()
    runner = RecordRunner("deployer", handler, publisher.publish_raw, keys_at_once=4, backoff_base_s=0.01)
    batch = FakeBatch(keyed(("payments", request("a", "1.0.0")), ("billing", request("b", "1.0.1", "billing")),
                            ("payments", request("c", "1.0.2"))))
    await runner.run_batch(batch)
    assert batch.consumer.commits == [{(topics.REQUESTS, 0): 12}]
    assert batch.consumer.seeks == [((topics.REQUESTS, 0), 12)]


def in_env(event_id: str, version: str, env: str) -> bytes:
    return new_event(PromotionRequested(service="payments", version=version, digest=DIGEST, env=env),
                     source="gates", event_id=event_id).to_bytes()


def whole_service(event_id: str) -> bytes:
    """A record of the service that names no environment (as a pipeline.applied)."""
    return json.dumps({"specversion": "1.0", "id": event_id, "data": {"service": "payments"}}).encode()


async def test_one_services_records_of_different_environments_run_side_by_side_with_a_lane():
    other_env = asyncio.Event()

    class WaitsForTheOtherEnvironment(FakeHandler):
        async def __call__(self, event: Event, unit=None) -> None:
            self.handled.append(event)
            if event.data.env == "prod-eu":  # can only finish once prod-us ran alongside it
                await asyncio.wait_for(other_env.wait(), timeout=2)
            else:
                other_env.set()

    handler, publisher = WaitsForTheOtherEnvironment(), FakePublisher()
    runner = RecordRunner("deployer", handler, publisher.publish_raw, keys_at_once=2, backoff_base_s=0.01,
                          lane=environment_lane)
    batch = FakeBatch(keyed(("payments", in_env("a", "1.0.0", "prod-eu")),
                            ("payments", in_env("b", "1.0.0", "prod-us"))))
    await runner.run_batch(batch)
    assert batch.calls == ["ack"] and runner.processed == 2 and runner.last_error is None


def test_a_record_of_no_environment_cuts_its_services_records_into_segments_each_lane_in_order():
    batch = keyed(("payments", in_env("a", "1", "eu")), ("payments", in_env("b", "1", "us")),
                  ("payments", in_env("c", "2", "eu")), ("payments", whole_service("d")),
                  ("payments", in_env("e", "2", "us")), ("payments", b"not json"))
    assert _segments(batch, list(range(6)), environment_lane) == [[[0, 2], [1]], [[3]], [[4]], [[5]]]
    assert _segments(batch, list(range(6)), None) == [[list(range(6))]]
    binary = FakeRecord(topics.REQUESTS, 0, 1, b"payments", json.dumps({"service": "p", "env": "eu"}).encode())
    assert environment_lane(binary) == "eu"  # binary mode: the value is the data


async def test_a_failing_environment_holds_back_its_services_later_segments_but_not_the_other_lane():
    handler, publisher = FailOn("a"), FakePublisher()
    runner = RecordRunner("deployer", handler, publisher.publish_raw, keys_at_once=4, backoff_base_s=0.01,
                          lane=environment_lane)
    batch = FakeBatch(keyed(("payments", in_env("a", "1", "eu")), ("payments", in_env("b", "1", "us")),
                            ("payments", whole_service("c"))))
    await runner.run_batch(batch)
    assert [event.id for event in handler.handled] == ["a", "b"]  # c waits behind a
    assert batch.consumer.seeks == [((topics.REQUESTS, 0), 10)] and batch.calls == []


class BufferingConsumer(FakeConsumer):
    """A consumer that has `buffered` records fetched already, by partition."""

    def __init__(self, buffered: dict) -> None:
        super().__init__()
        self.buffered = buffered
        self.asked: list[tuple[int, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.asked.append((timeout_ms, max_records))
        return self.buffered


class Delivered(FakeMessage):
    """FastStream's message for the record that woke the service, with its consumer."""

    def __init__(self, record: FakeRecord, consumer: FakeConsumer) -> None:
        super().__init__(record.value or b"", topic=record.topic, partition=record.partition, offset=record.offset)
        self.raw_message = record  # that very record (a copy would carry another timestamp a millisecond later)
        self.consumer = consumer


async def test_a_batch_is_the_delivered_record_and_what_was_fetched_behind_it_without_waiting():
    first, *rest = records(request("a", "1"), request("b", "2"), request("c", "3"), request("d", "4"))
    consumer = BufferingConsumer({"p0": [rest[0]], "p1": rest[1:]})
    fetched = await Fetched.behind(Delivered(first, consumer), limit=100)
    assert [record.offset for record in fetched.raw_message] == [10, 11, 12, 13]
    assert consumer.asked == [(0, 99)]
    await fetched.nack()  # read it all again: each partition back to its first record of the batch
    assert consumer.seeks == [((topics.REQUESTS, 0), 10), ((topics.REQUESTS, 1), 12)]


async def test_a_batch_limit_of_one_takes_only_the_delivered_record():
    first = records(request("a", "1"))[0]
    consumer = BufferingConsumer({"p0": records(request("b", "2"))})
    fetched = await Fetched.behind(Delivered(first, consumer), limit=1)
    assert fetched.raw_message == (first,) and consumer.asked == []


async def test_prepare_sees_the_valid_events_before_the_transaction_and_its_failure_means_one_by_one():
    prepared: list[list[str]] = []

    async def prepare(events: list[Event]) -> None:
        prepared.append([event.id for event in events])
        if len(prepared) == 1:
            raise OSError("disk full")

    values = (request("a", "1.0.0"), b"{", request("b", "1.0.1"))
    handler, publisher, together = FakeHandler(), FakePublisher(), FakeTogether()
    runner = RecordRunner("intake", handler, publisher.publish_raw, together=together, prepare=prepare)
    first = FakeBatch(records(*values))
    await runner.run_batch(first)
    assert prepared == [["a", "b"]] and together.transactions == []  # no transaction was opened
    assert [event.id for event in handler.handled] == ["a", "b"] and first.calls == ["ack"]  # one by one
    await runner.run_batch(FakeBatch(records(*values)))
    assert prepared == [["a", "b"], ["a", "b"]] and together.transactions == [(["a", "b"], "committed")]
