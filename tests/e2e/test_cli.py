"""The operator's path through the CLI: approve, status --json, history, rollback."""

import json

import pytest

from tests.e2e.support import ENVS, api_token, promote_async

pytestmark = pytest.mark.e2e


async def test_an_operator_approves_inspects_and_rolls_back_prod_with_the_cli(scenario):
    await scenario.apply_pipeline()
    digest = await scenario.promote_to_staging("2.4.1", author="alice")
    await scenario.wait("gate.pending", env="prod", version="2.4.1")

    alice, bob = api_token("alice", "approver:prod"), api_token("bob", "approver:prod")
    oncall = api_token("oncall", "promoter:prod")
    by_author = await promote_async("approve", scenario.service, "2.4.1", "--env", "prod",
                                    env={"PROMOTE_TOKEN": alice})
    assert by_author.returncode == 1
    assert by_author.stderr.strip() == ("promote: error: refused: you are the author of this release (alice): this "
                                        "environment's approvals must come from someone else")
    by_bob = await promote_async("approve", scenario.service, "2.4.1", "--env", "prod", env={"PROMOTE_TOKEN": bob})
    assert by_bob.returncode == 0, by_bob.stderr
    assert "approval by bob recorded" in by_bob.stdout and "gate for" in by_bob.stdout and "passed" in by_bob.stdout
    verified = await scenario.wait("verification.passed", env="prod", version="2.4.1")
    await scenario.processed_by("ledger", verified)

    status = await promote_async("status", scenario.service, "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["service"] == scenario.service and list(body["environments"]) == list(ENVS)
    assert {env: (e["version"], e["digest"], e["state"]) for env, e in body["environments"].items()} == {
        env: ("2.4.1", digest, "verified") for env in ENVS}

    history = await promote_async("history", scenario.service, "--env", "prod", "--json")
    types = [entry["event"]["type"] for entry in json.loads(history.stdout)]
    assert "approval.granted" in types and types[-1] == "verification.passed"

    rollback = await promote_async("rollback", scenario.service, "--env", "prod", env={"PROMOTE_TOKEN": oncall})
    assert rollback.returncode == 1 and "no earlier verified release in prod" in rollback.stderr
