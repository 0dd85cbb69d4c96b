"""The notifier's rules without a broker (services/notifier/domain.py, config.py): what is worth a message, who
wants it, which URLs may be named, what is sent and how it is signed, when a failure is tried again."""

import json
import os

import pytest
from pydantic import ValidationError

from services.notifier.config import NotificationsFile
from services.notifier.domain import (DeadLetter, Notifications, Subscription, dead_letter_message,
                                      dead_letter_notice, delivery_id, message, notice_of, retry_in, signature,
                                      url_allowed, verify_signature, wanted)
from shared.contracts.events import (DriftDetected, GatePending, RollbackCompleted, VerificationFailed,
                                     VerificationPassed, new_event)

DIGEST = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64
DEPLOYED = dict(deployment_id="d1", service="pay", version="1.0.0", digest=DIGEST, env="prod", config={},
                config_version=CONFIG)
HOOK = "http://127.0.0.1:19580/hook"


def event(data):
    return new_event(data, source="/promote/test")


def subscription(**changes) -> Subscription:
    return Subscription(**({"name": "ops", "url": HOOK, "kinds": ["approval_needed"], "secret": "ops"} | changes))


@pytest.mark.parametrize(("data", "kind"), [
    pytest.param(GatePending(service="pay", version="1.0.0", digest=DIGEST, env="prod",
                             reasons=["waiting for 1 approval(s) from release-managers"]), "approval_needed",
                 id="a pending gate waiting for an approval"),
    pytest.param(GatePending(service="pay", version="1.0.0", digest=DIGEST, env="prod",
                             reasons=["not yet verified in staging"]), None, id="a pending gate waiting for nobody"),
    pytest.param(VerificationFailed(**DEPLOYED, checks={}, reason="health: 500"), "verification_failed",
                 id="a failed verification"),
    pytest.param(VerificationPassed(**DEPLOYED, checks={}), None, id="a passed one is nobody's business"),
    pytest.param(RollbackCompleted(service="pay", rollback_id="r1", env="prod", version="0.9.0", digest=DIGEST),
                 "rollback", id="a rollback"),
    pytest.param(DriftDetected(service="pay", env="prod", version="1.0.0", digest=DIGEST, config_version=CONFIG,
                               slot="prod", driver="local", differences=["process: not running"]), "drift",
                 id="drift"),
])
def test_which_events_are_worth_a_message(data, kind):
    notice = notice_of(event(data))
    assert (None if notice is None else notice.kind) == kind
    if notice is not None:
        assert notice.service == "pay" and notice.env == "prod" and "pay" in notice.text


NOTICE = notice_of(event(GatePending(service="pay", version="1.0.0", digest=DIGEST, env="prod",
                                     reasons=["waiting for 1 approval(s)"])))


@pytest.mark.parametrize(("changes", "wants"), [
    ({}, True),
    ({"kinds": ["drift"]}, False),
    ({"services": ["pay", "shop"]}, True),
    ({"services": ["shop"]}, False),
    ({"envs": ["staging"]}, False),
    ({"envs": ["prod"], "kinds": ["drift", "approval_needed"]}, True),
])
def test_a_subscription_wants_its_kinds_for_its_services_and_environments(changes, wants):
    assert wanted(subscription(**changes), NOTICE) is wants


@pytest.mark.parametrize(("url", "allowed"), [
    (HOOK, True),
    ("http://127.0.0.1:19580/other", True),
    ("http://127.0.0.1:19581/hook", False),
    ("https://127.0.0.1:19580/hook", False),
    ("http://localhost:19580/hook", False),
    ("http://127.0.0.1:19580@169.254.169.254/", False),
    ("http://127.0.0.1:19580\\@evil/", False),
    ("http://127.0.0.1:5432/", False),
])
def test_only_urls_under_an_allowed_prefix_are_ever_requested(url, allowed):
    assert url_allowed(url, ("http://127.0.0.1:19580/",)) is allowed
    assert not url_allowed(url, ())


def test_a_prefix_is_compared_by_its_host_not_as_text():
    assert url_allowed("https://hooks.example/T1", ("https://hooks.example/",))
    assert not url_allowed("https://hooks.example.evil/T1", ("https://hooks.example/",))
    assert not url_allowed("https://hooks.example/T1", ("https://hooks.example/services/",))


@pytest.mark.parametrize(("changes", "said"), [
    ({"url": "ftp://127.0.0.1/x"}, "url: an http:// or https:// URL"),
    ({"url": "http://user:pw@127.0.0.1:19580/"}, "no credentials"),
    ({"kinds": []}, "at least 1 item"),
    ({"kinds": ["everything"]}, "Input should be"),
    ({"services": ["Pay"]}, "is not a name"),
    ({"secret": "../etc/passwd"}, "String should match pattern"),
    ({"max_attempts": 0}, "greater than or equal to 1"),
])
def test_a_subscription_that_cannot_be_is_refused_with_the_reason(changes, said):
    with pytest.raises(ValidationError, match=said):
        subscription(**changes)


def test_two_subscriptions_of_one_name_are_refused():
    with pytest.raises(ValidationError, match="named twice"):
        Notifications(subscriptions=[subscription(), subscription()])


def test_a_cloudevent_is_sent_as_it_is_and_a_slack_message_as_text():
    gate = event(GatePending(service="pay", version="1.0.0", digest=DIGEST, env="prod",
                             reasons=["waiting for 1 approval(s)"]))
    body, content_type = message(subscription(), gate, notice_of(gate))
    assert content_type.startswith("application/cloudevents+json") and body == gate.to_bytes()
    body, content_type = message(subscription(format="slack"), gate, notice_of(gate))
    text = json.loads(body)["text"]
    assert content_type == "application/json" and text.startswith("[approval needed] pay 1.0.0 in prod")
    assert gate.id in text


def test_a_signature_verifies_with_its_secret_only_over_its_body_and_only_while_recent():
    header = signature(b"s3cret", 1_700_000_000, b"{}")
    assert verify_signature(b"s3cret", header, b"{}", now=1_700_000_100)
    assert not verify_signature(b"other", header, b"{}", now=1_700_000_100)
    assert not verify_signature(b"s3cret", header, b"{ }", now=1_700_000_100)
    assert not verify_signature(b"s3cret", header, b"{}", now=1_700_001_000)
    assert not verify_signature(b"s3cret", "garbage", b"{}", now=1_700_000_000)


def test_one_delivery_per_subscription_and_event_and_retries_double_up_to_a_cap():
    assert delivery_id("ops", "e1") == delivery_id("ops", "e1") != delivery_id("ops", "e2") != delivery_id("dev", "e1")
    assert [retry_in(n) for n in (1, 2, 3, 10, 20)] == [1.0, 2.0, 4.0, 300.0, 300.0]


def write(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)


def test_the_file_is_read_again_when_it_changes_and_a_bad_one_keeps_the_last_good(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    path = tmp_path / "notifications.yaml"
    loaded = NotificationsFile(path, secrets)
    assert loaded.load().subscriptions == () and loaded.problem is None
    write(path, "allowed_urls: ['http://127.0.0.1:19580/']\nsubscriptions:\n"
                "  - {name: ops, url: 'http://127.0.0.1:19580/hook', kinds: [drift], secret: ops}\n"
                "  - {name: meta, url: 'http://169.254.169.254/latest', kinds: [drift], secret: ops}\n")
    assert [s.name for s in loaded.load().subscriptions] == ["ops"]
    assert "subscription 'meta': http://169.254.169.254/latest is not under an allowed URL" in loaded.problem
    write(path, "subscriptions: [{name: ops, url: 'http://127.0.0.1:19580/hook', kinds: [all], secret: ops}]   \n")
    assert [s.name for s in loaded.load().subscriptions] == ["ops"]  # the last good one stays
    assert "subscriptions.0.kinds.0" in loaded.problem


def test_a_secret_others_may_write_is_no_secret(tmp_path):
    loaded = NotificationsFile(tmp_path / "none.yaml", tmp_path)
    assert loaded.secret(subscription()) is None
    write(tmp_path / "ops", "key-1\n")
    assert loaded.secret(subscription()) == b"key-1"
    os.chmod(tmp_path / "ops", 0o666)
    assert loaded.secret(subscription()) is None
    write(tmp_path / "ops", "   ")
    assert loaded.secret(subscription()) is None


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "notifications.yaml"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    write(path, bomb)
    loaded = NotificationsFile(path, tmp_path)
    assert loaded.load().subscriptions == () and "aliases expanded" in loaded.problem


DLQ_HEADERS = {"dlq.reason": "invalid data: version: too long", "dlq.topic": "promotion.builds", "dlq.partition": "2",
               "dlq.offset": "41", "dlq.consumer": "intake", "dlq.at": "2026-12-04T01:00:00+00:00"}


@pytest.mark.parametrize(("value", "service", "env"), [
    (json.dumps({"type": "build.completed", "data": {"service": "pay", "env": "prod"}}).encode(), "pay", "prod"),
    (json.dumps({"data": {"service": "Not A Name", "env": ["x"]}}).encode(), "", None),
    (b"\xff\xfe not json", "", None),
    (b"[1, 2]", "", None),
])
def test_a_dead_letter_names_its_service_only_when_its_record_is_an_event_that_names_one(value, service, env):
    letter = DeadLetter.of(0, 7, DLQ_HEADERS, value)
    notice = dead_letter_notice(letter)
    assert (notice.kind, notice.service, notice.env) == ("dead_letter", service, env)
    assert notice.text == ("intake gave up a record of promotion.builds (partition 2, offset 41): "
                           "invalid data: version: too long")
    assert wanted(subscription(kinds=["dead_letter"]), notice)
    assert wanted(subscription(kinds=["dead_letter"], services=["pay"]), notice) == (service == "pay")


def test_the_notifier_s_own_given_up_deliveries_are_not_told_of():
    own = DLQ_HEADERS | {"dlq.consumer": "notifier", "dlq.subscription": "ops"}
    assert dead_letter_notice(DeadLetter.of(0, 8, own, b"{}")) is None


def test_a_dead_letter_is_told_as_a_cloudevent_of_where_it_came_from_never_its_bytes():
    value = json.dumps({"data": {"service": "pay", "secret": "s3cr3t"}}).encode()
    letter = DeadLetter.of(0, 9, DLQ_HEADERS, value)
    body, content_type = dead_letter_message(subscription(kinds=["dead_letter"]), letter, dead_letter_notice(letter))
    sent = json.loads(body)
    assert content_type.startswith("application/cloudevents+json") and b"s3cr3t" not in body
    assert (sent["specversion"], sent["type"], sent["id"], sent["time"]) == \
        ("1.0", "dead_letter.recorded", "dead-letter-0-9", "2026-12-04T01:00:00+00:00")
    assert sent["data"] == {"reason": "invalid data: version: too long", "consumer": "intake",
                                 "topic": "promotion.builds", "partition": 2, "offset": 41,
                                 "at": "2026-12-04T01:00:00+00:00", "size": len(value), "service": "pay", "env": None,
                                 "dead_letter": {"partition": 0, "offset": 9}}
    slack, _ = dead_letter_message(subscription(kinds=["dead_letter"], format="slack"), letter,
                                   dead_letter_notice(letter))
    assert json.loads(slack)["text"].startswith("[dead letter] intake gave up a record of promotion.builds")
