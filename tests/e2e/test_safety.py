"""Immutability, duplicate delivery, rollback and re-attachment, on the real broker, database and processes."""

import httpx
import pytest

import devstack
from shared.contracts.events import GatePassed, RollbackRequested, new_event

pytestmark = pytest.mark.e2e


async def test_a_version_published_again_with_another_digest_is_rejected_and_never_deployed(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("2.4.1")
    await scenario.send(scenario.build_completed("2.4.1", path, digest))
    await scenario.wait("verification.passed", env="dev", version="2.4.1")

    other_path, other_digest = scenario.build("2.4.1", label="rebuilt")
    assert other_digest != digest
    await scenario.send(scenario.build_completed("2.4.1", other_path, other_digest))
    rejected = await scenario.wait("artifact.rejected", version="2.4.1")

    assert (rejected.data.reason, rejected.data.digest) == ("immutability-violation", other_digest)
    await scenario.wait("verification.passed", env="test", version="2.4.1")
    deployed = await scenario.query("deployer", "select distinct digest from deployments where service = $1",
                                    scenario.service)
    assert [r["digest"] for r in deployed] == [digest]


async def test_a_file_whose_bytes_do_not_match_the_claimed_digest_is_rejected(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("1.0.0", label=scenario.service)  # bytes no earlier test has stored
    _, other_digest = scenario.build("1.0.1")
    await scenario.send(scenario.build_completed("1.0.0", path, other_digest))
    rejected = await scenario.wait("artifact.rejected", version="1.0.0")
    assert rejected.data.reason == "digest-mismatch"
    assert rejected.data.detail == "digest mismatch: the file's bytes do not match the claimed digest"
    assert not (scenario.settings.store_dir / "sha256" / digest.removeprefix("sha256:")).exists()  # nothing kept


async def test_the_same_build_event_delivered_twice_changes_nothing(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("5.0.0")
    event = new_event(scenario.build_completed("5.0.0", path, digest), source="/tests")
    await scenario.publisher.publish(event)
    await scenario.publisher.publish(event)
    await scenario.wait("verification.passed", env="test", version="5.0.0")
    # Staging waits for evidence: the pipeline is quiet, so every effect of both deliveries is in.
    await scenario.wait("gate.pending", env="staging", version="5.0.0")

    assert len(scenario.seen("artifact.registered", version="5.0.0")) == 1
    assert len(scenario.seen("deployment.started", env="dev")) == 1
    starts = await scenario.query("deployer", "select env, count(*) as n from driver_calls where service = $1 "
                                  "group by env order by env", scenario.service)
    assert {r["env"]: r["n"] for r in starts} == {"dev": 1, "test": 1}
    entries = await scenario.query("ledger", "select count(*) as n from entries where event_id = $1", event.id)
    assert entries[0]["n"] == 1


async def test_a_failed_verification_returns_the_environment_to_its_last_verified_release(scenario):
    await scenario.apply_pipeline()
    path, good = scenario.build("2.4.1")
    await scenario.send(scenario.build_completed("2.4.1", path, good))
    await scenario.wait("verification.passed", env="test", version="2.4.1")

    bad_path, bad = scenario.build("2.4.2", bad=True)
    await scenario.send(scenario.build_completed("2.4.2", bad_path, bad))
    failed = await scenario.wait("verification.failed", env="dev", version="2.4.2")
    assert failed.data.checks["health"] == "GET /health answered 500"
    completed = await scenario.wait("rollback.completed", env="dev")

    assert (completed.data.version, completed.data.digest) == ("2.4.1", good)
    assert scenario.seen("promotion.requested", env="test", version="2.4.2") == []
    # The ledger reads the rollback's verification on its own: await its commit before reading its state.
    await scenario.processed_by("ledger", await scenario.wait("verification.passed", env="dev", purpose="rollback"))
    status = await scenario.query("ledger", "select version, state from environments where service = $1 "
                                  "and env = 'dev'", scenario.service)
    assert (status[0]["version"], status[0]["state"]) == ("2.4.1", "verified")


async def test_an_operator_rollback_returns_to_the_release_verified_before_the_current_one(scenario):
    await scenario.apply_pipeline()
    for version in ("1.0.0", "1.1.0"):
        path, digest = scenario.build(version)
        await scenario.send(scenario.build_completed(version, path, digest))
        verified = await scenario.wait("verification.passed", env="dev", version=version)
    # The request travels on another topic than the verification: let the rollback service see 1.1.0 first.
    await scenario.processed_by("rollback", verified)

    await scenario.send(RollbackRequested(service=scenario.service, env="dev", requested_by="oncall"))
    ordered = await scenario.wait("rollback.ordered", env="dev")
    completed = await scenario.wait("rollback.completed", env="dev")
    assert (ordered.data.version, ordered.data.from_version, ordered.data.requested_by) == ("1.0.0", "1.1.0", "oncall")
    assert completed.data.version == "1.0.0"


async def test_an_operator_rollback_with_nothing_to_return_to_fails_with_a_reason(scenario):
    await scenario.apply_pipeline()
    await scenario.send(RollbackRequested(service=scenario.service, env="prod", requested_by="oncall"))
    failed = await scenario.wait("rollback.failed", env="prod")
    assert "no earlier verified release" in failed.data.reason


async def test_a_restarted_deployer_reattaches_to_running_apps_instead_of_starting_them_again(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("7.0.0")
    await scenario.send(scenario.build_completed("7.0.0", path, digest))
    passed = await scenario.wait("gate.passed", env="dev", version="7.0.0")
    first = await scenario.wait("deployment.succeeded", env="dev", version="7.0.0")

    import signal

    devstack.stop_service("deployer", sig=signal.SIGKILL)
    devstack.start_service("deployer")
    again = GatePassed(**passed.data.model_dump())  # a second order for the very same release
    await scenario.send(again, as_principal="gates")  # as gates would after a redelivery
    second = await scenario.watcher.wait_for(
        lambda e: e.envelope.type == "verification.passed" and e.data.service == scenario.service
        and e.data.env == "dev" and e.data.deployment_id != first.data.deployment_id, 60, "the second verification")

    assert second.data.digest == digest
    starts = await scenario.query("deployer", "select count(*) as n from driver_calls where service = $1 "
                                  "and env = 'dev'", scenario.service)
    assert starts[0]["n"] == 1
    slot = await scenario.query("deployer", "select pid, port from slots where service = $1 and env = 'dev'",
                                scenario.service)
    assert slot[0]["port"] == first.data.port


ONE_ENV = """
service: {service}
environments:
  - name: dev
"""
ONE_ENV_WITH_SECRET = """
service: {service}
environments:
  - name: dev
    config: {{APP_ENV: dev, DB_DSN: {{secret: {service}/dsn}}}}
"""


async def test_a_deployment_refused_for_a_missing_secret_leaves_the_running_release_alone(scenario):
    secret = scenario.settings.secrets_dir / scenario.service / "dsn"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("postgres://db/dev\n")
    await scenario.apply_pipeline(ONE_ENV_WITH_SECRET)
    path, good = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, good))
    first = await scenario.wait("verification.passed", env="dev", version="1.0.0")

    secret.unlink()
    path, _ = scenario.build("1.1.0")
    await scenario.send(scenario.build_completed("1.1.0", path, _))
    refused = await scenario.wait("deployment.failed", env="dev", version="1.1.0")
    assert "is not in the secret store" in refused.data.reason
    completed = await scenario.wait("rollback.completed", env="dev")

    assert completed.data.version == "1.0.0"
    starts = await scenario.query("deployer", "select digest from driver_calls where service = $1", scenario.service)
    assert [r["digest"] for r in starts] == [good]  # 1.0.0 kept running: re-attached, never restarted
    port = scenario.seen("deployment.succeeded", env="dev", version="1.0.0")[0].data.port
    async with httpx.AsyncClient() as client:
        answer = (await client.get(f"http://127.0.0.1:{port}/version")).json()
    assert answer["version"] == "1.0.0" and first.data.digest == good


async def test_an_artifact_that_cannot_start_is_refused_before_the_running_release_is_stopped(scenario):
    await scenario.apply_pipeline(ONE_ENV)
    path, good = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, good))
    await scenario.wait("verification.passed", env="dev", version="1.0.0")
    port = scenario.seen("deployment.succeeded", env="dev", version="1.0.0")[0].data.port
    junk = scenario.dist / "not-a-program"
    junk.write_bytes(b"this is not an executable\n")
    from shared.artifacts import file_digest

    await scenario.send(scenario.build_completed("1.1.0", junk, file_digest(junk)))
    refused = await scenario.wait("deployment.failed", env="dev", version="1.1.0")
    assert "not an executable (neither ELF nor a #! line)" in refused.data.reason
    await scenario.wait("rollback.completed", env="dev")  # back to 1.0.0 by re-attaching to it
    starts = await scenario.query("deployer", "select digest from driver_calls where service = $1", scenario.service)
    assert [r["digest"] for r in starts] == [good]  # 1.0.0 never stopped, nothing restarted
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{port}/version")).json()["version"] == "1.0.0"


async def test_an_artifact_the_system_cannot_execute_fails_its_deployment_and_the_deployer_goes_on(scenario):
    await scenario.apply_pipeline()
    junk = scenario.dist / "not-a-program"
    junk.write_bytes(b"this is not an executable\n")
    from shared.artifacts import file_digest

    await scenario.send(scenario.build_completed("0.0.1", junk, file_digest(junk)))
    failed = await scenario.wait("deployment.failed", env="dev", version="0.0.1")
    assert "cannot start" in failed.data.reason

    path, digest = scenario.build("0.0.2")
    await scenario.send(scenario.build_completed("0.0.2", path, digest))
    await scenario.wait("verification.passed", env="dev", version="0.0.2")
