"""The walking skeleton end to end: one artifact, by digest, from dev to prod on real Kafka and PostgreSQL."""

import httpx
import pytest

from shared.contracts.events import ApprovalGranted, ApprovalRejected, PromotionRequested
from tests.e2e.support import ENVS

pytestmark = pytest.mark.e2e


async def test_a_build_reaches_prod_by_digest_only_after_an_approval_by_someone_other_than_the_author(scenario):
    await scenario.apply_pipeline()
    digest = await scenario.promote_to_staging("2.4.1", author="alice")
    await scenario.wait("gate.pending", env="prod", version="2.4.1")

    await scenario.send(ApprovalGranted(service=scenario.service, version="2.4.1", env="prod", approver="alice"))
    refused = await scenario.watcher.wait_for(
        lambda e: e.envelope.type == "gate.pending" and e.data.service == scenario.service
        and any("alice is the author and cannot approve" in r for r in e.data.reasons),
        30, "gate.pending naming the author")
    assert refused.data.env == "prod"
    assert scenario.seen("gate.passed", env="prod") == []

    await scenario.send(ApprovalGranted(service=scenario.service, version="2.4.1", env="prod", approver="bob"))
    verified = await scenario.wait("verification.passed", env="prod", version="2.4.1")

    deployed = {e.data.env: e.data for e in scenario.seen("deployment.succeeded", version="2.4.1")}
    assert set(deployed) == set(ENVS)
    assert {d.digest for d in deployed.values()} == {digest} == {verified.data.digest}
    async with httpx.AsyncClient() as client:
        prod = (await client.get(f"http://127.0.0.1:{deployed['prod'].port}/version")).json()
        dev = (await client.get(f"http://127.0.0.1:{deployed['dev'].port}/version")).json()
    assert (prod["version"], prod["env"], prod["feature_new_ui"]) == ("2.4.1", "prod", False)
    assert (dev["version"], dev["env"], dev["feature_new_ui"]) == ("2.4.1", "dev", True)


async def test_environments_are_entered_in_pipeline_order_each_after_the_previous_verification(scenario):
    await scenario.apply_pipeline()
    await scenario.promote_to_staging("1.0.0")
    order = [(e.envelope.type, e.data.env) for e in scenario.watcher.events
             if e.data.service == scenario.service and e.envelope.type in ("gate.passed", "verification.passed")]
    assert order == [("gate.passed", "dev"), ("verification.passed", "dev"),
                     ("gate.passed", "test"), ("verification.passed", "test"),
                     ("gate.passed", "staging"), ("verification.passed", "staging")]


async def test_nothing_skips_an_environment_even_when_a_promotion_to_prod_is_forged_and_approved(scenario):
    await scenario.apply_pipeline()
    path, digest = scenario.build("3.0.0")
    await scenario.send(scenario.build_completed("3.0.0", path, digest))
    await scenario.wait("verification.passed", env="dev", version="3.0.0")

    # Only intake and gates may write promotion requests: here a compromised intake forges one.
    await scenario.send(PromotionRequested(service=scenario.service, version="3.0.0", digest=digest, env="prod"),
                        as_principal="intake")
    held = await scenario.wait("gate.pending", env="prod", version="3.0.0")
    assert held.data.reasons == ["not yet verified in staging"]

    await scenario.send(ApprovalGranted(service=scenario.service, version="3.0.0", env="prod", approver="bob"))
    rejudged = await scenario.watcher.wait_for(
        lambda e: e.data.service == scenario.service and getattr(e.data, "env", None) == "prod"
        and e.envelope.type.startswith("gate.") and e.id != held.id, 30, "the prod verdict after the approval")
    assert (rejudged.envelope.type, rejudged.data.reasons) == ("gate.pending", ["not yet verified in staging"])
    rows = await scenario.query("deployer", "select env from deployments where service = $1", scenario.service)
    assert "prod" not in {r["env"] for r in rows}


async def test_a_rejection_fails_the_promotion_into_that_environment(scenario):
    await scenario.apply_pipeline()
    await scenario.promote_to_staging("4.0.0", author="alice")
    await scenario.wait("gate.pending", env="prod", version="4.0.0")

    await scenario.send(ApprovalRejected(service=scenario.service, version="4.0.0", env="prod", approver="bob",
                                         comment="not during the sale"))
    failed = await scenario.wait("gate.failed", env="prod", version="4.0.0")
    assert failed.data.reasons == ["rejected by bob"]
    late = await scenario.send(ApprovalGranted(service=scenario.service, version="4.0.0", env="prod",
                                               approver="carol"))
    await scenario.processed_by("gates", late)
    # A failed promotion is final: the later approval is recorded but judges nothing.
    rows = await scenario.query("gates", "select status from promotions where service = $1 and env = 'prod'",
                                scenario.service)
    assert [r["status"] for r in rows] == ["failed"]
    assert scenario.seen("gate.passed", env="prod") == []
