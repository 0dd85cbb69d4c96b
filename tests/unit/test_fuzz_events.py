"""Hostile input, generated: parse_event accepts a record or refuses it in one line, and nothing else.

Hypothesis feeds arbitrary bytes, arbitrary JSON and structurally mutated valid envelopes of
every event type to `parse_event` and to `RecordRunner` (with hand-written fakes). Together the
properties below run a little over 10,000 generated cases.
"""

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from structlog.testing import capture_logs

from shared.contracts import topics
from shared.platform.consumer import RecordRunner
from shared.contracts.events import EVENT_TYPES, MAX_EVENT_BYTES, Event, InvalidEvent, new_event, parse_event
from tests.unit.test_record_runner import FakeHandler, FakeMessage, FakePublisher

DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
SAMPLE_FIELDS: dict[str, Any] = {
    "service": "payments", "version": "2.4.1", "digest": DIGEST, "env": "prod", "commit": "c0ffee",
    "artifact": {"kind": "file", "uri": "file:///tmp/payments-2.4.1.pyz", "digest": DIGEST},
    "author": "alice", "checks": {"unit-tests": "passed"}, "check": "unit-tests", "result": "passed",
    "url": "https://ci.example/1", "pipeline_version": OTHER_DIGEST, "applied_by": "ops",
    "definition": {"service": "payments", "environments": [{"name": "dev", "gates": []}]},
    "kind": "file", "build_event_id": "evt-build-1", "reason": "digest-mismatch", "detail": "bytes differ",
    "strategy": "replace", "driver": "local", "config": {"APP_ENV": "prod", "DSN": {"secret": "payments/dsn"}},
    "config_version": OTHER_DIGEST, "reasons": ["waiting for 1 approval(s)"], "deployment_id": "dep-1",
    "purpose": "promotion", "rollback_id": "rb-1", "port": 18100, "approver": "bob", "comment": "ok",
    "requested_by": "carol", "from_version": "2.4.0", "who": "mallory", "action": "approve", "status": 403,
    "stopped": ["qa.blue"], "tag": "127.0.0.1:18500/payments:2.4.1", "moved_to": OTHER_DIGEST,
    "slot": "prod", "differences": ["process 4242 not running"], "on_drift": "restore", "how": "restore",
    "drift_id": "evt-drift-1", "request_id": "evt-request-1", "state": "step", "step": 2, "steps": 4, "share": 25,
    "environments": {"prod": {"state": "drifted", "version": "2.4.1", "digest": DIGEST,
                              "differences": ["process 4242 not running"]}},
}
KIND_FIELDS: dict[str, dict[str, Any]] = {"canary.commanded": {"action": "pause"}}
"""Fields whose sample differs for one kind of event."""
TOPICS = [spec.name for spec in topics.ALL_TOPICS if spec.name != topics.DLQ]
# Any field name (line breaks included) and any float (NaN and infinities included).
names = st.text(max_size=12)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4), max_leaves=12)
odd_text = st.sampled_from(["", " ", "\x00", "é", "😀", "\u202e", "\ud800", "ﬁ", "İ", "a\nb", "\t", "null"])
# No deadline, no "too slow" check: some cases carry ~1 MB of JSON, and CI machines are shared.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
huge_text = st.sampled_from([129, 4097, 70_000, 140_000]).map(lambda n: "é" * n)


def sample_event(kind: str) -> Event:
    """A valid event of `kind` built from SAMPLE_FIELDS."""
    model = EVENT_TYPES[kind]
    fields = {**SAMPLE_FIELDS, **KIND_FIELDS.get(kind, {})}
    data = model.model_validate({name: fields[name] for name in model.model_fields if name in fields})
    return new_event(data, source="/fuzz", event_id=f"evt-{kind}", correlation_id="corr-1")


def positions(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair in a JSON tree, the root's fields included."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found.append((node, key))
        found += positions(value)
    return found


def retyped(value: Any) -> list[Any]:
    """The same value as other JSON types."""
    return [[value], {"value": value}, str(value), len(str(value)), value is None, None, 1.5]


@st.composite
def mutated_envelopes(draw) -> tuple[bytes, str]:
    """A valid envelope of some type with 0-3 structural mutations, as bytes, and its type's topic."""
    kind = draw(st.sampled_from(sorted(EVENT_TYPES)))
    doc = json.loads(sample_event(kind).to_bytes())
    for _ in range(draw(st.integers(0, 3))):
        container, key = draw(st.sampled_from(positions(doc)))
        operation = draw(st.sampled_from(["drop", "replace", "retype", "add", "huge", "odd", "nest", "type",
                                          "time"]))
        if operation == "drop":
            del container[key]
        elif operation == "replace":
            container[key] = draw(json_values)
        elif operation == "retype":
            container[key] = draw(st.sampled_from(retyped(container[key])))
        elif operation == "add" and isinstance(container, dict):
            container[draw(names)] = draw(json_values)
        elif operation == "add":
            container.append(draw(json_values))
        elif operation == "huge":
            container[key] = draw(huge_text)
        elif operation == "odd":
            container[key] = draw(odd_text | st.text(min_size=1))
        elif operation == "nest":
            container[key] = nested(draw(st.sampled_from([3, 60, 400])))
        elif operation == "type":
            doc["type"] = draw(st.sampled_from(sorted(EVENT_TYPES)))
        else:  # any time of years 1-9999, with or without an offset: most are far in the past or future
            doc["time"] = draw(st.datetimes(timezones=st.none() | st.just(UTC))).isoformat()
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode(errors="surrogatepass"), EVENT_TYPES[kind].topic


def nested(depth: int) -> Any:
    """Junk nested `depth` levels deep."""
    value: Any = "junk"
    for level in range(depth):
        value = [value] if level % 2 else {"x": value}
    return value


def json_bytes(value: Any) -> bytes:
    """A JSON value on the wire."""
    return json.dumps(value).encode()


def note_outcome(outcome: str) -> None:
    """Count outcomes for `pytest --hypothesis-show-statistics` (only inside a generated case)."""
    if currently_in_test_context():
        event(outcome)


def parsed_or_refused(raw: bytes, expected_topic: str | None = None) -> Event | None:
    """The contract: an Event that survives re-serialisation, or InvalidEvent with a one-line reason."""
    try:
        parsed = parse_event(raw, expected_topic)
    except InvalidEvent as invalid:
        note_outcome("refused: " + re.sub(r"'.*|[0-9]+", "…", invalid.reason.split(":")[0]))
        assert invalid.reason.strip(), "empty reason"
        assert len(invalid.reason.splitlines()) == 1, f"reason of several lines: {invalid.reason!r}"
        return None
    note_outcome("parsed")
    assert parse_event(parsed.to_bytes(), expected_topic) == parsed
    return parsed


def test_every_event_type_has_a_valid_sample_to_mutate():
    assert {kind: sample_event(kind).envelope.type for kind in EVENT_TYPES} == {kind: kind for kind in EVENT_TYPES}
    assert all(parsed_or_refused(sample_event(kind).to_bytes()) is not None for kind in EVENT_TYPES)


@settings(FUZZ, max_examples=2500)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_parsed_or_refused_with_a_one_line_reason(raw):
    parsed_or_refused(raw)


@settings(FUZZ, max_examples=2500)
@given(json_values)
def test_arbitrary_json_is_parsed_or_refused_with_a_one_line_reason(value):
    parsed_or_refused(json_bytes(value))


@settings(FUZZ, max_examples=3500)
@given(mutated_envelopes(), st.booleans())
def test_mutated_envelopes_of_every_type_are_parsed_or_refused_with_a_one_line_reason(case, on_its_topic):
    raw, topic = case
    parsed_or_refused(raw, topic if on_its_topic else None)


any_record = st.one_of(
    mutated_envelopes(),
    st.tuples(st.binary(max_size=256), st.sampled_from(TOPICS)),
    st.tuples(json_values.map(json_bytes), st.sampled_from(TOPICS)),
)


# The samples' service, another one, an empty and a null key.
record_keys = st.sampled_from([b"payments", b"payments", b"billing", b"", None])


@settings(FUZZ, max_examples=2000)
@given(any_record, st.sampled_from(TOPICS), st.booleans(), record_keys)
async def test_the_runner_dead_letters_every_invalid_record_once_and_hands_every_valid_one_to_the_handler(
        case, other_topic, on_its_topic, key):
    structlog.contextvars.clear_contextvars()
    raw, topic = case
    topic = topic if on_its_topic else other_topic
    handler, publisher = FakeHandler(), FakePublisher()
    message = FakeMessage(raw, topic=topic, partition=1, offset=7, key=key)

    async def publish_raw(*args) -> None:  # noted on the message too, to see that the ack comes after it
        await publisher.publish_raw(*args)
        message.calls.append("dead-lettered")

    runner = RecordRunner("fuzz", handler, publish_raw, backoff_base_s=0.001)
    try:
        expected = parse_event(raw, expected_topic=topic, key=key, now=datetime.now(UTC))
    except InvalidEvent as invalid:
        expected, reason = None, invalid.reason
    with capture_logs():
        await runner.run(message)
    if expected is None:
        assert message.calls == ["dead-lettered", "ack"]
        assert handler.handled == []
        assert [(t, k, v) for t, k, v, _ in publisher.published] == [(topics.DLQ, key, raw)]
        assert publisher.published[0][3]["dlq.reason"] == reason[:2000]
    else:
        assert message.calls == ["ack"]
        assert handler.handled == [expected]
        assert publisher.published == []


def test_an_event_of_exactly_the_size_limit_is_parsed():
    raw = sample_event("build.completed").to_bytes()
    padded = raw + b" " * (MAX_EVENT_BYTES - len(raw))
    assert len(padded) == MAX_EVENT_BYTES
    assert parse_event(padded) == parse_event(raw)


def test_an_event_one_byte_over_the_limit_is_refused_before_it_is_parsed():
    raw = sample_event("build.completed").to_bytes()
    with pytest.raises(InvalidEvent) as refused:
        parse_event(raw + b" " * (MAX_EVENT_BYTES + 1 - len(raw)))
    assert refused.value.reason == "event of 262145 bytes exceeds the limit of 262144 bytes"
    with pytest.raises(InvalidEvent, match="exceeds the limit"):
        parse_event(b"{" * (MAX_EVENT_BYTES + 1))  # not even valid JSON: the size is checked first


# Defects the fuzzing found in shared/contracts/events.py, pinned by name (both fixed).


def test_a_field_name_with_a_line_break_is_refused_in_one_line():
    doc = json.loads(sample_event("approval.granted").to_bytes())
    doc["data"]["a\nb"] = None
    assert parsed_or_refused(json_bytes(doc)) is None  # refused (an unknown field), not parsed
    with pytest.raises(InvalidEvent) as refused:
        parse_event(json_bytes(doc))
    assert refused.value.reason == "invalid approval.granted data: a\\nb: Extra inputs are not permitted"


def test_a_number_beyond_the_float_range_in_a_pipeline_definition_is_refused_or_survives_re_serialisation():
    doc = json.loads(sample_event("pipeline.applied").to_bytes())
    raw = json_bytes(doc).replace(b'"gates": []', b'"gates": 1e400')
    assert b"1e400" in raw
    parsed_or_refused(raw)
