"""Event ids cannot be squatted: an id is known per (topic, service), ids the services derive cannot be predicted,
an id reused with other content is dead-lettered, and a replay afterwards still gives the live state."""

import json
import uuid

import pytest

from shared.contracts import topics
from shared.contracts.events import EvidenceRecorded, new_event
from tests.e2e.support import dead_letters, dlq_end, promote_async

pytestmark = pytest.mark.e2e


async def test_an_id_of_an_event_on_another_topic_does_not_hide_evidence_published_under_it(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, digest))
    verified = await scenario.wait("verification.passed", env="test", version="1.0.0")
    # Gates and the ledger handled this verification; CI now publishes the evidence staging needs under
    # the same id, as the squatter of issue 9 did (there the real event came second and was dropped).
    evidence = EvidenceRecorded(service=scenario.service, version="1.0.0", digest=digest, env="test",
                                check="integration-tests", result="passed")
    await scenario.publisher.publish(new_event(evidence, source="/ci", event_id=verified.id))

    entered = await scenario.wait("verification.passed", env="staging", version="1.0.0")
    assert entered.data.digest == digest
    entries = await scenario.query("ledger", "select topic from entries where event_id = $1 order by topic",
                                   verified.id)
    assert [row["topic"] for row in entries] == [topics.DEPLOYMENTS, topics.EVIDENCE]


async def test_the_ids_the_services_derive_are_not_the_predictable_uuid5_of_public_fields(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, digest))
    passed = await scenario.wait("gate.passed", env="dev", version="1.0.0")

    public = f"gate.passed/{scenario.service}/1.0.0/dev/{digest}"  # the once-per fields, as ids were derived before
    assert passed.id != str(uuid.uuid5(uuid.NAMESPACE_URL, public))
    assert uuid.UUID(passed.id)  # still a UUID on the wire


async def test_an_id_reused_with_other_content_is_dead_lettered_and_the_replay_still_gives_the_live_state(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("2.0.0")
    await scenario.send(scenario.build_completed("2.0.0", path, digest))
    await scenario.wait("gate.pending", env="staging", version="2.0.0")
    start = await dlq_end(scenario.settings)

    first = EvidenceRecorded(service=scenario.service, version="2.0.0", digest=digest, env="test",
                             check="integration-tests", result="failed")
    reused = first.model_copy(update={"result": "passed"})  # the same id, a different verdict
    original = new_event(first, source="/ci")
    await scenario.publisher.publish(original)
    await scenario.processed_by("gates", original)
    await scenario.publisher.publish(new_event(reused, source="/ci", event_id=original.id))

    from_us = lambda letter: letter[0].key == scenario.service.encode()  # noqa: E731
    letters = await dead_letters(scenario.settings, start,
                                 lambda got: {h["dlq.consumer"] for _, h in filter(from_us, got)} >= {"gates", "ledger"})
    reasons = {headers["dlq.consumer"]: headers["dlq.reason"] for _, headers in filter(from_us, letters)}
    assert reasons["gates"] == reasons["ledger"] == (
        f"id reused with other content: {original.id} was handled on {topics.EVIDENCE} with different content")
    later = new_event(first.model_copy(update={"check": "smoke"}), source="/ci")  # behind it, same partition
    await scenario.publisher.publish(later)
    await scenario.processed_by("gates", later)
    assert scenario.seen("gate.passed", env="staging") == []  # the reused id's "passed" never counted

    await scenario.processed_by("ledger", later)
    replay = await promote_async("replay", "--json")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    report = json.loads(replay.stdout)
    assert report["identical"] is True and report["complete"] is True
    assert report["invalid"] >= 1
