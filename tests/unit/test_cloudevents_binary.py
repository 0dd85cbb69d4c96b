"""Both content modes of the CloudEvents Kafka binding: a binary-mode record (attributes in ce_ headers, the
data as the value) is the very event of its structured twin, as the official SDK writes either; headers that
are too big, unreadable or say both modes are refused in one line, and a dead letter keeps them."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from cloudevents.core.bindings import kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import http as legacy_http
from cloudevents.v1 import kafka as legacy_kafka

from services.api.dead_letters import DeadLetter, DeadLetterError, resubmit
from services.ledger import repository
from shared.platform import inbox
from shared.contracts import topics
from shared.platform.consumer import RecordRunner, parse_record
from shared.contracts.events import EVENT_TYPES, MAX_EVENT_BYTES, Event, InvalidEvent, new_event
from shared.contracts.kafka_binding import parse_kafka_event
from shared.contracts.limits import MAX_HEADER_BYTES
from shared.platform.settings import Settings
from tests.unit.test_fuzz_events import FUZZ, sample_event
from tests.unit.test_record_runner import FakeHandler, FakePublisher, FakeRecord

STRUCTURED = ("content-type", b"application/cloudevents+json")
"""The header our services' records carry (and FastStream's correlation_id, which means nothing to the binding)."""


def binary(event: Event) -> tuple[list[tuple[str, bytes]], bytes]:
    """(headers, value) of an event in binary mode, written by hand from its structured form."""
    structured = event.envelope.model_dump(mode="json", exclude_none=True)
    headers = [(f"ce_{name}", value.encode()) for name, value in structured.items()
               if name not in ("data", "datacontenttype")]
    return headers + [("content-type", structured["datacontenttype"].encode())], json.dumps(structured["data"]).encode()


BUILD = sample_event("build.completed")
HEADERS, VALUE = binary(BUILD)


def record(headers, value: bytes, *, topic: str = topics.BUILDS, key: bytes | None = b"payments") -> FakeRecord:
    """A record as the broker appended it just now."""
    return FakeRecord(topic, 0, 7, key, value, headers=tuple(headers))


def refusal(headers, value: bytes, **where) -> str:
    """The reason a consumer refuses this record for."""
    with pytest.raises(InvalidEvent) as refused:
        parse_record(record(headers, value, **where))
    return refused.value.reason


SDK_TIME = datetime(2026, 11, 26, 9, 41, 20, tzinfo=UTC)


def sdk_event() -> CloudEvent:
    """A build.completed as CI would write it with the official SDK (cloudevents 2.x)."""
    return CloudEvent(attributes={"type": "build.completed", "source": "/ci/payments", "id": "build-42",
                                  "time": SDK_TIME, "subject": "payments", "correlationid": "corr-1"},
                      data=BUILD.data.model_dump(mode="json"))


def from_sdk(message) -> FakeRecord:
    """The record a KafkaMessage of the SDK becomes on the broker."""
    key = message.key.encode() if isinstance(message.key, str) else message.key
    return record(list(message.headers.items()), message.value, key=key)


def by_service(event) -> bytes:
    """The SDK's key mapper: our events travel under the service's name."""
    return b"payments"


def test_a_binary_mode_build_completed_is_the_same_event_as_its_structured_form():
    structured = record([STRUCTURED, ("correlation_id", b"fs-1")], BUILD.to_bytes())
    assert parse_record(record(HEADERS, VALUE)) == parse_record(structured) == BUILD


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_event_type_reads_the_same_in_binary_mode_as_in_structured_mode(kind):
    event = sample_event(kind)
    headers, value = binary(event)
    assert parse_record(record(headers, value, topic=event.data.topic)) == event


def test_a_build_completed_the_official_sdk_sends_in_binary_mode_is_the_event_it_sends_in_structured_mode():
    event = sdk_event()
    binary_record = from_sdk(kafka.to_binary(event, JSONFormat(), key_mapper=by_service))
    structured_record = from_sdk(kafka.to_structured(event, JSONFormat(), key_mapper=by_service))
    assert dict(binary_record.headers)["ce_specversion"] == b"1.0" and binary_record.value.startswith(b'{"service"')
    ours = new_event(BUILD.data, source="/ci/payments", event_id="build-42", time=SDK_TIME, correlation_id="corr-1")
    assert parse_record(binary_record) == parse_record(structured_record) == ours


def test_a_build_completed_the_sdks_legacy_api_sends_in_binary_mode_is_accepted():
    attributes = {"type": "build.completed", "source": "/ci/payments", "id": "build-43", "subject": "payments",
                  "datacontenttype": "application/json", "correlationid": "corr-1"}
    event = legacy_http.CloudEvent(attributes, BUILD.data.model_dump(mode="json"))
    binary_record = from_sdk(legacy_kafka.to_binary(event, key_mapper=lambda _: "payments"))
    structured_record = from_sdk(legacy_kafka.to_structured(event, key_mapper=lambda _: "payments"))
    assert dict(binary_record.headers)["content-type"] == b"application/json"
    assert parse_record(binary_record) == parse_record(structured_record)


class FakeLedgerConnection:
    """An empty ledger as `repository.append` talks to it: keeps the row it inserts."""

    def __init__(self) -> None:
        self.inserted: tuple | None = None

    async def fetchval(self, sql: str, *args):
        return None  # not in the ledger yet, and no entry before it (the chain starts at GENESIS)

    async def execute(self, sql: str, *args) -> None:
        if sql.startswith("insert into entries"):
            self.inserted = args


async def test_the_ledger_stores_a_binary_mode_event_with_the_canonical_bytes_and_hash_of_its_structured_form():
    event = sdk_event()
    appended = []
    for message in (kafka.to_binary(event, JSONFormat(), key_mapper=by_service),
                    kafka.to_structured(event, JSONFormat(), key_mapper=by_service)):
        conn = FakeLedgerConnection()
        parsed = parse_record(from_sdk(message))
        digest = await repository.append(conn, parsed, parsed.data.topic)
        appended.append((digest, conn.inserted, inbox.identity(parsed), inbox.content_digest(parsed)))
    assert appended[0] == appended[1]
    assert appended[0][0] is not None and appended[0][1] is not None


def test_a_reader_of_history_reads_a_binary_mode_event_without_checking_key_or_time():
    assert parse_kafka_event(HEADERS, VALUE) == BUILD


def test_a_header_name_is_case_sensitive_as_the_binding_says():
    others = [("CE_SUBJECT", b"billing"), ("Content-Type", b"text/plain")]
    assert parse_record(record([*HEADERS, *others], VALUE)) == BUILD


def test_an_empty_content_type_counts_as_none_and_json_is_the_default():
    without = [(name, value) for name, value in HEADERS if name != "content-type"]
    assert parse_record(record(without, VALUE)) == parse_record(record([*without, ("content-type", b"")], VALUE))
    assert parse_record(record(without, VALUE)) == BUILD


FUTURE = (datetime.now(UTC) + timedelta(hours=1)).isoformat()


def _with(*, without: tuple[str, ...] = (), **changed: bytes | None) -> list[tuple[str, bytes | None]]:
    """HEADERS with some values replaced or added (None: a null value), and the names in `without` left out."""
    replaced = [(name, changed.pop(name, value)) for name, value in HEADERS if name not in without]
    return replaced + list(changed.items())


def _size(headers) -> int:
    """Header bytes as the limit counts them: names and values."""
    return sum(len(name) + len(value) for name, value in headers)


HOSTILE = [
    # (what, headers, value, reason)
    ("structured content-type with ce_ headers", [*HEADERS[:-1], STRUCTURED], VALUE,
     "content-type 'application/cloudevents+json' is structured mode but ce_specversion is binary mode: "
     "a record is in one of them"),
    ("ce_ headers on a structured record", [STRUCTURED, ("ce_subject", b"billing")],
     BUILD.to_bytes(),
     "header 'ce_subject' without ce_specversion: binary mode needs ce_specversion, structured mode carries "
     "no ce_ headers"),
    ("a repeated attribute", [*HEADERS, ("ce_id", b"evt-other")], VALUE, "header 'ce_id' appears more than once"),
    ("a repeated content-type", [*HEADERS, ("content-type", b"application/json")], VALUE,
     "header 'content-type' appears more than once"),
    ("an attribute that is not UTF-8", _with(ce_source=b"/ci/\xff"), VALUE, "header 'ce_source' is not UTF-8"),
    ("a null attribute", _with(ce_type=None), VALUE, "header 'ce_type' has no value (null)"),
    ("headers over the limit", [*HEADERS, ("x-padding", b"x" * (MAX_HEADER_BYTES - _size(HEADERS) - 8))], VALUE,
     f"headers of {MAX_HEADER_BYTES + 1} bytes exceed the limit of {MAX_HEADER_BYTES} bytes"),
    ("headers over the limit in structured mode", [STRUCTURED, ("x-padding", b"x" * MAX_HEADER_BYTES)],
     BUILD.to_bytes(),
     f"headers of {_size([STRUCTURED]) + 9 + MAX_HEADER_BYTES} bytes exceed the limit of {MAX_HEADER_BYTES} bytes"),
    ("a value over the limit", HEADERS, b" " * (MAX_EVENT_BYTES + 1),
     f"event of {MAX_EVENT_BYTES + 1} bytes exceeds the limit of {MAX_EVENT_BYTES} bytes"),
    ("a content-type other than JSON", _with(**{"content-type": b"text/plain"}), VALUE,
     "invalid envelope: datacontenttype: Input should be 'application/json'"),
    ("data in a header", _with(ce_data=b"{}"), VALUE, "header 'ce_data': data travels as the record's value in "
                                                      "binary mode"),
    ("datacontenttype in a ce_ header", _with(ce_datacontenttype=b"application/json"), VALUE,
     "header 'ce_datacontenttype': datacontenttype travels as the content-type header in binary mode"),
    ("an attribute name in capitals", _with(ce_ID=b"evt-1"), VALUE,
     "header 'ce_ID' names no CloudEvents attribute (ce_ and lowercase ASCII letters or digits)"),
    ("an extension we do not know", _with(ce_partitionkey=b"payments"), VALUE,
     "invalid envelope: partitionkey: Extra inputs are not permitted"),
    ("another specversion", _with(ce_specversion=b"0.3"), VALUE,
     "invalid envelope: specversion: Input should be '1.0'"),
    ("no time", _with(without=("ce_time",)), VALUE, "invalid envelope: time: Field required"),
    ("a value that is not JSON", HEADERS, b"{not json", "invalid envelope: data: Invalid JSON: key must be a string "
                                                        "at line 1 column 2"),
    ("a value that is not a JSON object", HEADERS, b"[1]", "invalid envelope: data: Input should be a valid "
                                                          "dictionary"),
    ("no value", HEADERS, b"", "invalid envelope: data: Field required"),
]


@pytest.mark.parametrize(("headers", "value", "reason"), [case[1:] for case in HOSTILE],
                         ids=[case[0] for case in HOSTILE])
def test_hostile_headers_are_refused_with_their_reason(headers, value, reason):
    assert refusal(headers, value) == reason


def _structured_with(change) -> bytes:
    envelope = BUILD.envelope.model_dump(mode="json", exclude_none=True)
    change(envelope)
    return json.dumps(envelope).encode()


MISTAKES = [
    # (what, header changes, the same change to the structured envelope, record key)
    ("an id too long", {"ce_id": b"x" * 201}, lambda e: e.update(id="x" * 201), b"payments"),
    ("an unknown type", {"ce_type": b"build.finished"}, lambda e: e.update(type="build.finished"), b"payments"),
    ("a type of another topic", {"ce_type": b"gate.passed"}, lambda e: e.update(type="gate.passed"), b"payments"),
    ("a subject that is not the service", {"ce_subject": b"billing"}, lambda e: e.update(subject="billing"),
     b"payments"),
    ("a time from the future", {"ce_time": FUTURE.encode()}, lambda e: e.update(time=FUTURE), b"payments"),
    ("a time that is no time", {"ce_time": b"yesterday"}, lambda e: e.update(time="yesterday"), b"payments"),
    ("another service's key", {}, lambda e: None, b"billing"),
    ("a null key", {}, lambda e: None, None),
]


@pytest.mark.parametrize(("changes", "change", "key"), [case[1:] for case in MISTAKES],
                         ids=[case[0] for case in MISTAKES])
def test_a_mistake_in_binary_mode_is_refused_for_the_reason_it_is_refused_in_structured_mode(changes, change, key):
    assert refusal(_with(**changes), VALUE, key=key) == refusal([STRUCTURED], _structured_with(change), key=key)


header_names = st.sampled_from([name for name, _ in HEADERS] + ["ce_partitionkey", "ce_", "ce_ID", "CE_ID",
                                                                   "ce_data", "traceparent", "correlation_id"])
header_values = st.one_of(st.none(), st.binary(max_size=40), st.sampled_from([value for _, value in HEADERS]),
                          st.text(max_size=20).map(str.encode))
headers_of = st.one_of(
    st.lists(st.tuples(header_names | st.text(max_size=12), header_values), max_size=12),
    st.tuples(st.integers(0, len(HEADERS) - 1), header_names, header_values).map(  # one change to a valid record
        lambda change: [*HEADERS[:change[0]], change[1:], *HEADERS[change[0] + 1:]]))


@settings(FUZZ, max_examples=1500)
@given(headers_of, st.sampled_from([VALUE, BUILD.to_bytes(), b"", b"[]", b"{", VALUE[:-1] + b", }"]))
def test_any_headers_give_the_event_or_a_one_line_refusal_and_nothing_else(headers, value):
    try:
        event = parse_record(record(headers, value))
    except InvalidEvent as invalid:
        assert invalid.reason.strip() and len(invalid.reason.splitlines()) == 1, invalid.reason
        return
    # Whichever mode: an event exactly as its structured form would be, with the data the record carries.
    assert parse_kafka_event([STRUCTURED], event.to_bytes()) == event
    assert event.data == BUILD.data


class OneMessage:
    """A FastStream KafkaMessage of one record, acknowledged by hand."""

    def __init__(self, record: FakeRecord) -> None:
        self.raw_message, self.body, self.calls = record, record.value, []

    async def ack(self) -> None:
        self.calls.append("ack")

    async def nack(self) -> None:
        self.calls.append("nack")


async def _dead_letter(headers, value: bytes, handler: FakeHandler | None = None) -> dict[str, str]:
    """The headers of the dead letter the runner publishes for this record (which it must dead-letter)."""
    publisher = FakePublisher()
    runner = RecordRunner("intake", handler or FakeHandler(), publisher.publish_raw, max_attempts=1,
                          backoff_base_s=0.001)
    await runner.run(OneMessage(record(headers, value)))
    [(topic, key, published, letter_headers)] = publisher.published
    assert (topic, key, published) == (topics.DLQ, b"payments", value)
    return letter_headers


def as_read_back(letter_headers: dict[str, str]) -> dict[str, str]:
    """A dead letter's headers as the API reads them: FastStream adds an empty content-type and a correlation_id
    unless the runner gave them."""
    return {"content-type": "", "correlation_id": "fs-1", **letter_headers}


async def test_a_binary_mode_dead_letter_keeps_the_ce_headers_and_is_resubmitted_as_the_same_record():
    letter_headers = await _dead_letter(HEADERS, VALUE, FakeHandler(ValueError("no such artifact")))
    assert {name: text.encode() for name, text in letter_headers.items() if not name.startswith("dlq.")} == \
           dict(HEADERS)
    assert "dlq.headers-altered" not in letter_headers
    letter = DeadLetter(0, 12, b"payments", VALUE, as_read_back(letter_headers))
    assert parse_record(record(letter.binding_headers(), VALUE)) == BUILD


async def test_a_binary_mode_dead_letter_without_content_type_is_resubmitted_without_one():
    without = _with(without=("content-type",))
    letter_headers = await _dead_letter(without, VALUE, FakeHandler(ValueError("no such artifact")))
    letter = DeadLetter(0, 12, b"payments", VALUE, as_read_back(letter_headers))
    assert letter.binding_headers() == without


async def test_a_dead_letter_says_which_headers_it_could_not_keep_as_they_were():
    hostile = [*_with(ce_source=b"/ci/\xff"), ("ce_id", b"evt-other"), ("x-trace", b"\xff")]
    letter_headers = await _dead_letter(hostile, VALUE)
    assert letter_headers["dlq.reason"] == "header 'ce_source' is not UTF-8"
    assert letter_headers["dlq.headers-altered"] == "ce_id, ce_source"
    assert "x-trace" not in letter_headers  # only the binding's headers are kept


async def test_a_dead_letter_whose_headers_were_altered_is_not_resubmitted():
    letter = DeadLetter(0, 13, b"payments", VALUE, {"dlq.topic": topics.OPERATIONS, "ce_id": "evt-other",
                                                     "dlq.headers-altered": "ce_id"})
    nowhere = Settings(kafka_bootstrap="127.0.0.1:1")  # were the refusal missing, nothing would reach a broker
    with pytest.raises(DeadLetterError) as refused:
        await resubmit(nowhere, letter, "dana")
    assert refused.value.status == 409
    assert str(refused.value) == ("dead letter 0:13 could not keep its headers ce_id as they were (repeated, null or "
                                  "not UTF-8): publish a corrected event there instead")
