"""Unit tests for shared.contracts.events: the CloudEvents envelope on the wire and why bytes are refused."""

import json
from datetime import UTC, datetime

import pytest

from shared.contracts import topics
from shared.contracts.events import (Artifact, BuildCompleted, Event, GatePassed, InvalidEvent, PromotionRequested,
                           new_event, parse_event)

DIGEST = "sha256:" + "a" * 64
AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def a_build(**changes) -> BuildCompleted:
    fields = dict(service="payments", version="1.4.0",
                  artifact=Artifact(kind="file", uri="file:///artifacts/payments-1.4.0.tar.gz", digest=DIGEST),
                  commit="0badc0de", author="alice", checks={"unit-tests": "passed"})
    return BuildCompleted(**(fields | changes))


def a_build_event() -> Event:
    return new_event(a_build(), source="ci/github", correlation_id="corr-1", event_id="evt-1", time=AT)


def wire(**envelope_changes) -> dict:
    """The JSON form of a valid build event, with some envelope fields changed."""
    return json.loads(a_build_event().to_bytes()) | envelope_changes


def with_data(**data_changes) -> bytes:
    envelope = wire()
    return json.dumps(envelope | {"data": envelope["data"] | data_changes}).encode()


def without(field: str) -> bytes:
    envelope = wire()
    del envelope[field]
    return json.dumps(envelope).encode()


def test_an_event_survives_the_round_trip_through_its_wire_bytes():
    event = a_build_event()
    parsed = parse_event(event.to_bytes(), expected_topic=topics.BUILDS)
    assert parsed.data == event.data
    assert isinstance(parsed.data, BuildCompleted)
    assert parsed.envelope == event.envelope
    assert (parsed.id, parsed.correlation_id) == ("evt-1", "corr-1")
    assert parsed.envelope.time == AT


def test_new_event_fills_the_envelope_from_the_data():
    event = new_event(PromotionRequested(service="payments", version="1.4.0", digest=DIGEST, env="dev"),
                      source="intake")
    assert event.envelope.specversion == "1.0"
    assert event.envelope.type == "promotion.requested"
    assert event.envelope.subject == "payments"
    assert event.envelope.data == {"service": "payments", "version": "1.4.0", "digest": DIGEST, "env": "dev"}
    assert event.correlation_id == event.id  # no correlation id given: the event starts its own chain


def test_two_fresh_events_get_different_ids():
    data = PromotionRequested(service="payments", version="1.4.0", digest=DIGEST, env="dev")
    assert new_event(data, source="intake").id != new_event(data, source="intake").id


def test_the_same_event_always_gives_the_same_bytes():
    event = a_build_event()
    assert event.to_bytes() == event.to_bytes()
    assert a_build_event().to_bytes() == event.to_bytes()
    assert parse_event(event.to_bytes()).to_bytes() == event.to_bytes()


def test_the_wire_bytes_leave_out_unset_optional_fields():
    event = new_event(PromotionRequested(service="payments", version="1", digest=DIGEST, env="dev"),
                      source="intake", event_id="e", time=AT)
    assert "correlationid" not in json.loads(event.to_bytes())


@pytest.mark.parametrize(("raw", "expected_topic", "reason_says"), [
    pytest.param(b"{not json", None, "invalid envelope", id="malformed JSON is refused"),
    pytest.param(b"[1, 2, 3]", None, "invalid envelope", id="a JSON array is not an event"),
    pytest.param(b'"payments"', None, "invalid envelope", id="a JSON string is not an event"),
    pytest.param(without("id"), None, "invalid envelope: id: Field required", id="an envelope without id"),
    pytest.param(without("type"), None, "invalid envelope: type", id="an envelope without type"),
    pytest.param(without("data"), None, "invalid envelope: data", id="an envelope without data"),
    pytest.param(json.dumps(wire(specversion="0.3")).encode(), None, "specversion",
                 id="CloudEvents 0.3 is refused"),
    pytest.param(json.dumps(wire(type="build.exploded")).encode(), None, "unknown event type 'build.exploded'",
                 id="an unknown event type is refused"),
    pytest.param(a_build_event().to_bytes(), topics.GATES,
                 "event type 'build.completed' does not belong on topic 'promotion.gates'",
                 id="a build event on the gates topic is refused"),
    pytest.param(with_data(artifact={"kind": "file", "uri": "file:///x", "digest": "md5:abc"}), None,
                 "invalid build.completed data: artifact.digest", id="a digest that is not sha256 hex"),
    pytest.param(with_data(surprise="!"), None, "invalid build.completed data: surprise: Extra inputs",
                 id="an unknown data field is refused"),
    pytest.param(with_data(service="Payments Service"), None, "invalid build.completed data: service",
                 id="a service name with capitals and spaces is refused"),
    pytest.param(json.dumps(wire(subject="orders")).encode(), None,
                 "subject 'orders' does not match data.service 'payments'",
                 id="a subject that is not the data's service is refused"),
])
def test_parse_event_refuses_bad_bytes_with_a_readable_one_line_reason(raw, expected_topic, reason_says):
    with pytest.raises(InvalidEvent) as refused:
        parse_event(raw, expected_topic=expected_topic)
    assert reason_says in refused.value.reason
    assert "\n" not in refused.value.reason
    assert str(refused.value) == refused.value.reason


def test_an_event_on_its_own_topic_is_accepted_when_the_topic_is_checked():
    event = new_event(GatePassed(service="payments", version="1", digest=DIGEST, env="dev", strategy="rolling",
                                 config={"APP_ENV": "dev", "DB_DSN": {"secret": "payments/dev/dsn"}},
                                 config_version=DIGEST, pipeline_version=DIGEST), source="gates")
    parsed = parse_event(event.to_bytes(), expected_topic=topics.GATES)
    assert parsed.data == event.data


def test_an_envelope_without_subject_is_accepted():
    envelope = wire()
    del envelope["subject"]
    assert parse_event(json.dumps(envelope).encode()).data == a_build()
