"""Fan-out and fan-in on the real stack: after staging one digest enters prod-eu and prod-us, which deploy as real
processes side by side; a join of both (`require: all`) waits for the second, one of either (`require: any`) for
the first. `promote pipeline validate` refuses a cycle with FILE:LINE:COL."""

import pytest

from tests.e2e.support import Scenario, promote

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
    await scenario.wait("verification.passed", env="global", digest=digest)
    assert [event.data.env for event in scenario.seen("gate.passed", digest=digest)].count("global") == 1
    pending = [event.data.reasons for event in scenario.seen("gate.pending", env="global")]
    assert all(reasons and reasons[0].startswith("not yet verified in ") for reasons in pending), pending


def test_pipeline_validate_refuses_a_cycle_naming_its_place(tmp_path):
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text("service: s\nenvironments:\n  - {name: dev}\n  - {name: a, after: [b]}\n"
                      "  - {name: b, after: [a]}\n")
    refused = promote("pipeline", "validate", str(cyclic), timeout=60)
    assert refused.returncode != 0
    assert f"{cyclic}:5:22: environments[2].after: b → a → b form a cycle" in refused.stderr
