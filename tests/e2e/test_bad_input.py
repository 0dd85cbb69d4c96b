"""Bad input loses nothing and stops nothing: dead letters with reasons, one-line CLI errors."""

import json
import re

import httpx
import pytest

import devstack
from shared.contracts import topics
from shared.contracts.events import new_event
from tests.e2e.support import dead_letters, dlq_end, promote

pytestmark = pytest.mark.e2e


async def test_malformed_events_go_to_the_dead_letter_topic_with_their_reason_and_the_consumer_goes_on(scenario):
    settings = scenario.settings
    start = await dlq_end(settings)
    await scenario.apply_pipeline()
    path, digest = scenario.build("1.0.0")
    good = new_event(scenario.build_completed("1.0.0", path, digest), source="/tests")
    envelope = good.to_bytes().decode()
    poison = {
        b"{not json": "invalid envelope",
        envelope.replace('"build.completed"', '"build.finished"').encode(): "unknown event type 'build.finished'",
        envelope.replace('"author":"alice"', '"author":""').encode(): "invalid build.completed data: author",
    }
    key = scenario.service.encode()
    for raw in poison:
        await scenario.publisher.publish_raw(topics.BUILDS, raw, key=key)
    await scenario.publisher.publish(good)

    await scenario.wait("verification.passed", env="dev", version="1.0.0")  # the consumer went on
    letters = await dead_letters(settings, start, lambda got: len(got) >= 2 * len(poison))  # intake and ledger
    by_consumer: dict[str, list] = {}
    for record, headers in letters:
        if record.key == key:
            by_consumer.setdefault(headers["dlq.consumer"], []).append((record.value, headers))
    assert set(by_consumer) == {"intake", "ledger"}
    for letters in by_consumer.values():
        assert [value for value, _ in letters] == list(poison)  # original bytes, in order
        for (value, headers), expected in zip(letters, poison.values(), strict=True):
            assert expected in headers["dlq.reason"]
            assert headers["dlq.topic"] == topics.BUILDS
            assert int(headers["dlq.offset"]) >= 0 and headers["dlq.partition"].isdigit()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{devstack.SERVICE_HEALTH_PORTS['intake']}") as client:
        health = (await client.get("/health")).json()
        metrics = (await client.get("/metrics")).text
    assert health["status"] == "ok" and health["dead_lettered"] >= len(poison)
    counted = re.search(r'^promote_events_dead_lettered_total\{consumer="intake"\} (\S+)$', metrics, re.M)
    assert counted is not None and float(counted.group(1)) >= len(poison)


@pytest.mark.parametrize("args, env, expected", [
    (["status", "no-such-service"], None, "unknown service 'no-such-service'"),
    (["rollback", "x", "--env", "dev"], {"PROMOTE_API_URL": "http://127.0.0.1:1"}, "cannot reach the promote API"),
    (["status"], {"PROMOTE_TOKEN": ""}, "not authenticated: no bearer token"),
    (["status"], {"PROMOTE_TOKEN": "pmt_000000000000_forged"}, "not authenticated: unknown API token"),
    (["status", "Bad Name"], None, "promote: error: service name 'Bad Name': must be 1-63 lowercase letters"),
    (["build-completed", "--service", "p", "--version", "1", "--commit", "c", "--author", "a"], None,
     "give one of --file PATH, --image REGISTRY/REPOSITORY:TAG, or --uri URI with --digest"),
    (["pipeline", "validate", "/no/such/file.yaml"], None, "/no/such/file.yaml"),
])
def test_cli_errors_are_one_readable_line_with_a_non_zero_exit(stack, args, env, expected):
    result = promote(*args, env=env)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_there_is_no_longer_a_way_to_say_who_approves_the_token_says_it(stack):
    result = promote("approve", "x", "1.0", "--env", "prod", "--as", "bob")
    assert result.returncode == 2 and "No such option: --as" in result.stderr


def test_pipeline_validate_names_the_line_and_column_of_each_problem(stack, tmp_path):
    bad = tmp_path / "pipeline.yaml"
    bad.write_text("service: payments\nenvironments:\n  - name: dev\n    gates: [{evidance: unit-tests}]\n")
    result = promote("pipeline", "validate", str(bad))
    assert result.returncode == 1
    assert f"{bad}:4:13: environments[0].gates[0]: unknown gate kind 'evidance'" in result.stderr


async def test_the_ledger_hash_chain_verifies_and_the_audit_lists_the_release(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, digest))
    await scenario.wait("verification.passed", env="dev", version="1.0.0")
    assert promote("audit", "--verify").returncode == 0
    audit = promote("audit", scenario.service, "1.0.0", "--json")
    assert audit.returncode == 0, audit.stderr
    report = json.loads(audit.stdout)
    assert report["chain"]["intact"] is True
    types = {entry["event"]["type"] for entry in report["events"]}
    assert {"build.completed", "artifact.registered", "promotion.requested", "gate.passed",
            "deployment.started", "deployment.succeeded", "verification.passed"} <= types
