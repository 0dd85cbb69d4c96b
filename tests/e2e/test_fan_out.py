"""Fan-out and fan-in on the real stack: after staging one digest enters prod-eu and prod-us, which deploy as real
processes side by side; a join of both (`require: all`) waits for the second, one of either (`require: any`) for
the first; status and audit show the graph. `promote pipeline validate` refuses a cycle with FILE:LINE:COL."""

import json

import pytest

from tests.e2e.support import Scenario, promote, promote_async

pytestmark = pytest.mark.e2e

FANNED = """
service: {service}
environments:
  - name: staging
    config: {{APP_ENV: staging}}
  - name: prod-eu
    after: [staging]
    config: {{APP_ENV: prod-eu}}
  - name: prod-us
    after: [staging]
    config: {{APP_ENV: prod-us}}
  - name: global
    after: [prod-eu, prod-us]
    driver: noop
  - name: first-prod
    after: [prod-eu, prod-us]
    require: any
    driver: noop
"""


async def test_a_digest_fans_out_to_two_prods_deployed_side_by_side_and_each_join_waits_as_it_requires(
        scenario: Scenario):
    await scenario.apply_pipeline(FANNED)
    path, digest = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, digest))

    verified = {env: await scenario.wait("verification.passed", env=env, digest=digest, timeout=60)
                for env in ("prod-eu", "prod-us")}
    started = {env: scenario.seen("deployment.started", env=env, digest=digest)[0] for env in verified}
    # Side by side: each side's deployment started before the other's was verified.
    assert max(event.envelope.time for event in started.values()) < \
        min(event.envelope.time for event in verified.values()), (started, verified)

    joined = await scenario.wait("gate.passed", env="global", digest=digest)
    assert joined.envelope.time >= max(event.envelope.time for event in verified.values())
    either = await scenario.wait("gate.passed", env="first-prod", digest=digest)
    assert either.envelope.time >= min(event.envelope.time for event in verified.values())
    done = await scenario.wait("verification.passed", env="global", digest=digest)
    assert [event.data.env for event in scenario.seen("gate.passed", digest=digest)].count("global") == 1
    pending = [event.data.reasons for event in scenario.seen("gate.pending", env="global")]
    assert all(reasons and reasons[0].startswith("not yet verified in ") for reasons in pending), pending

    # Status and audit show the graph, the audit marking where this release was verified.
    await scenario.processed_by("ledger", done)
    graph = "staging → prod-eu | prod-us → global (after all of prod-eu, prod-us) | first-prod (after any of " \
            "prod-eu, prod-us)"
    shown = await promote_async("status", scenario.service)
    assert shown.returncode == 0 and f"pipeline: {graph}" in shown.stdout, shown.stdout + shown.stderr
    audit = await promote_async("audit", scenario.service, "1.0.0")
    marked = "staging ✓ → prod-eu ✓ | prod-us ✓ → global ✓ (after all of prod-eu, prod-us)"
    assert audit.returncode == 0 and marked in audit.stdout, audit.stdout + audit.stderr
    status = json.loads((await promote_async("status", scenario.service, "--json")).stdout)
    assert status["graph"][3] == {"name": "global", "after": ["prod-eu", "prod-us"], "require": "all"}


def test_pipeline_validate_refuses_a_cycle_naming_its_place(tmp_path):
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text("service: s\nenvironments:\n  - {name: dev}\n  - {name: a, after: [b]}\n"
                      "  - {name: b, after: [a]}\n")
    refused = promote("pipeline", "validate", str(cyclic), timeout=60)
    assert refused.returncode != 0
    assert f"{cyclic}:5:22: environments[2].after: b → a → b form a cycle" in refused.stderr
