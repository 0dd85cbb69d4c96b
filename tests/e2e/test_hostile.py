"""Hostile input on the real stack: oversized, early, replayed or misaddressed events; dead letters resubmitted."""

import base64
import json
from datetime import UTC, datetime

import pytest

from shared.contracts import topics
from shared.contracts.events import MAX_EVENT_BYTES, ApprovalGranted, PromotionRequested, new_event
from shared.contracts.pipeline import parse_pipeline
from tests.e2e.support import PIPELINE, api_token, dead_letters, dlq_end, promote_async

pytestmark = pytest.mark.e2e


async def test_an_oversized_build_is_dead_lettered_with_its_size_and_intake_goes_on(scenario):
    settings = scenario.settings
    start = await dlq_end(settings)
    await scenario.apply_pipeline()
    path, digest = scenario.build("1.0.0")
    valid = new_event(scenario.build_completed("1.0.0", path, digest), source="/tests").to_bytes()
    oversized = valid + b" " * (300 * 1024 - len(valid))  # valid JSON, only too big
    key = scenario.service.encode()
    await scenario.publisher.publish_raw(topics.BUILDS, oversized, key=key)
    path, digest = scenario.build("1.0.1")
    await scenario.send(scenario.build_completed("1.0.1", path, digest))

    await scenario.wait("verification.passed", env="dev", version="1.0.1")
    from_intake = lambda letter: letter[0].key == key and letter[1]["dlq.consumer"] == "intake"  # noqa: E731
    letters = await dead_letters(settings, start, lambda got: any(map(from_intake, got)))
    record, headers = next(filter(from_intake, letters))
    assert record.value == oversized
    assert headers["dlq.reason"] == f"event of {300 * 1024} bytes exceeds the limit of {MAX_EVENT_BYTES} bytes"
    assert headers["dlq.topic"] == topics.BUILDS
    assert scenario.seen("artifact.registered", version="1.0.0") == []


async def test_an_approval_of_a_release_that_does_not_exist_yet_is_refused_and_counts_for_nothing_later(scenario):
    await scenario.apply_pipeline()
    bob = api_token("bob", "approver:prod")
    early = await promote_async("approve", scenario.service, "7.0.0", "--env", "prod", env={"PROMOTE_TOKEN": bob})
    assert early.returncode == 1
    assert early.stderr.strip() == (f"promote: error: {scenario.service} 7.0.0 is not registered: an approval names "
                                    "a release that exists")
    refused = await scenario.wait("operation.refused", action="approve")
    assert (refused.data.who, refused.data.version, refused.data.env, refused.data.status) == ("bob", "7.0.0",
                                                                                              "prod", 404)

    await scenario.promote_to_staging("7.0.0", author="alice")
    held = await scenario.wait("gate.pending", env="prod", version="7.0.0")
    assert held.data.reasons == ["waiting for 1 approval(s) (not by the author, alice)"]


async def test_a_build_event_replayed_with_its_old_id_after_the_promotion_changes_nothing(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("5.0.0")
    build = new_event(scenario.build_completed("5.0.0", path, digest), source="/tests")
    await scenario.publisher.publish(build)
    await scenario.wait("verification.passed", env="test", version="5.0.0")
    await scenario.wait("gate.pending", env="staging", version="5.0.0")  # dev and test done; staging waits

    await scenario.publisher.publish(build)  # the same bytes, the same id, long after
    # A later build of the same service goes through the same partitions behind the replay:
    # once it waits at staging, every effect the replay could have had has happened.
    path, later = scenario.build("5.0.1")
    await scenario.send(scenario.build_completed("5.0.1", path, later))
    await scenario.wait("gate.pending", env="staging", version="5.0.1")

    assert len(scenario.seen("artifact.registered", version="5.0.0")) == 1
    assert len(scenario.seen("promotion.requested", version="5.0.0", env="dev")) == 1
    starts = await scenario.query("deployer", "select env, count(*) as n from driver_calls where service = $1 "
                                  "and digest = $2 group by env order by env", scenario.service, digest)
    assert {r["env"]: r["n"] for r in starts} == {"dev": 1, "test": 1}
    entries = await scenario.query("ledger", "select count(*) as n from entries where event_id = $1", build.id)
    assert entries[0]["n"] == 1


async def test_a_build_without_a_pipeline_is_registered_and_waits_until_the_pipeline_is_applied(scenario):
    path, digest = scenario.build("1.0.0")
    build = await scenario.send(scenario.build_completed("1.0.0", path, digest))
    registered = await scenario.wait("artifact.registered", version="1.0.0")
    await scenario.processed_by("intake", build)
    waiting = await scenario.query("intake", "select promotion_requested from artifacts where service = $1",
                                   scenario.service)
    assert registered.data.digest == digest and [r["promotion_requested"] for r in waiting] == [False]

    await scenario.apply_pipeline()
    requested = await scenario.wait("promotion.requested", env="dev", version="1.0.0")
    await scenario.wait("verification.passed", env="dev", version="1.0.0")
    assert requested.data.digest == digest
    assert len(scenario.seen("promotion.requested", env="dev")) == 1


async def test_a_promotion_into_an_environment_the_pipeline_does_not_have_fails_naming_it(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("2.0.0")
    await scenario.send(scenario.build_completed("2.0.0", path, digest))
    await scenario.wait("verification.passed", env="dev", version="2.0.0")

    await scenario.send(PromotionRequested(service=scenario.service, version="2.0.0", digest=digest, env="qa"),
                        as_principal="intake")  # a compromised intake: the only other writer of requests
    failed = await scenario.wait("gate.failed", env="qa", version="2.0.0")
    assert failed.data.reasons == ["environment 'qa' is not in the pipeline"]
    rows = await scenario.query("deployer", "select env from deployments where service = $1", scenario.service)
    assert "qa" not in {r["env"] for r in rows}


def _dead_letter_headers(topic: str, consumer: str, reason: str) -> list[tuple[str, bytes]]:
    """The headers a service puts on a dead letter (as if it had failed at offset 4711 of partition 1)."""
    headers = {"dlq.topic": topic, "dlq.partition": "1", "dlq.offset": "4711", "dlq.consumer": consumer,
               "dlq.reason": reason, "dlq.at": datetime.now(UTC).isoformat()}
    return [(name, value.encode()) for name, value in headers.items()]


async def test_a_dead_letter_is_listed_and_once_replayed_the_pipeline_is_applied(scenario):
    from cli.ops import pipeline_applied

    applied = new_event(pipeline_applied(parse_pipeline(PIPELINE.format(service=scenario.service)), "ops"),
                        source="/tests")
    reason = f"handler failed 5 times: simulated ({scenario.service})"
    # As gates would have dead-lettered it because of a bug that has been fixed since.
    await scenario.publisher.publish_raw(topics.DLQ, applied.to_bytes(), key=scenario.service.encode(),
                                         headers=_dead_letter_headers(topics.PIPELINES, "gates", reason),
                                         as_principal="gates")

    listed = await promote_async("dlq", "list", "--limit", "500", "--json")
    assert listed.returncode == 0, listed.stderr
    [letter] = [letter for letter in json.loads(listed.stdout) if letter["reason"] == reason]
    assert (letter["consumer"], letter["key"], letter["source"]) == (
        "gates", scenario.service, {"topic": topics.PIPELINES, "partition": 1, "offset": 4711})
    assert base64.b64decode(letter["value_base64"]) == applied.to_bytes()
    assert letter["value_text"] == applied.to_bytes().decode() and letter["size"] == len(applied.to_bytes())

    replayed = await promote_async("dlq", "replay", letter["id"])
    assert replayed.returncode == 0, replayed.stderr
    assert f"dead letter {letter['id']} replayed to {topics.PIPELINES}" in replayed.stdout
    await scenario.watcher.wait_for(lambda event: event.id == applied.id, what="the resubmitted pipeline")
    path, digest = scenario.build("3.1.0")
    await scenario.send(scenario.build_completed("3.1.0", path, digest))
    verified = await scenario.wait("verification.passed", env="dev", version="3.1.0")  # the pipeline took effect
    assert verified.data.digest == digest
    resubmitted = [record for record in scenario.watcher.records
                   if record.topic == topics.PIPELINES and record.key == scenario.service.encode()]
    assert [record.value for record in resubmitted] == [applied.to_bytes()]
    assert {name: value.decode() for name, value in resubmitted[0].headers} == {
        "dlq.replayed-from": letter["id"], "dlq.replayed-by": "admin"}  # the token's identity


async def test_an_operator_cannot_resubmit_a_dead_lettered_build_only_ci_can_publish_it_again(scenario):
    path, digest = scenario.build("3.2.0")
    build = new_event(scenario.build_completed("3.2.0", path, digest), source="/tests")
    reason = f"handler failed 5 times: simulated ({scenario.service})"
    await scenario.publisher.publish_raw(topics.DLQ, build.to_bytes(), key=scenario.service.encode(),
                                         headers=_dead_letter_headers(topics.BUILDS, "intake", reason),
                                         as_principal="intake")
    listed = await promote_async("dlq", "list", "--limit", "500", "--json")
    [letter] = [letter for letter in json.loads(listed.stdout) if letter["reason"] == reason]

    replayed = await promote_async("dlq", "replay", letter["id"])
    assert replayed.returncode == 1
    assert replayed.stderr.strip() == (
        f"promote: error: refused: dead letter {letter['id']} came from {topics.BUILDS}, which only its producer may write "
        f"to (operators resubmit {topics.OPERATIONS} and {topics.PIPELINES}): publish it again there")


async def test_replaying_a_dead_letter_that_does_not_exist_is_one_line_and_exit_1(stack):
    result = await promote_async("dlq", "replay", "0:999999999")
    assert result.returncode == 1
    assert result.stderr.strip() == "promote: error: no dead letter 0:999999999 (promote dlq list shows them)"
    assert result.stdout == ""
