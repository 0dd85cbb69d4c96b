"""What gates says on the bus for each verdict, and whom a verification requests next (services/gates/domain):
the rules that were in its handler, as tables, without a database."""

import pytest

from services.gates.domain import Facts, Release, Verdict, requests_after, verdict_event
from shared.contracts.events import GateFailed, GatePassed, GatePending, VerificationPassed
from shared.contracts.pipeline import parse_pipeline

DIGEST = "sha256:" + "a" * 64
PIPELINE = parse_pipeline("""\
service: pay
environments:
  - {name: staging, config: {APP_ENV: staging}}
  - {name: prod-eu, after: [staging], strategy: {canary: {steps: [10, 100]}}, config: {APP_ENV: eu}}
  - {name: prod-us, after: [staging], driver: noop}
  - {name: global, after: [prod-eu, prod-us], driver: noop}
""")
FACTS = Facts(pipeline=PIPELINE, release=Release("pay", "1.0.0", DIGEST, "alice"))
IDENT = dict(service="pay", version="1.0.0", digest=DIGEST, env="prod-eu")


@pytest.mark.parametrize(("verdict", "previous", "always", "said"), [
    pytest.param(Verdict("failed", ("rejected by bob",)), [], False, (GateFailed, ["rejected by bob"]),
                 id="a failure is always said"),
    pytest.param(Verdict("pending", ("waiting for 1 approval(s)",)), [], False,
                 (GatePending, ["waiting for 1 approval(s)"]), id="a pending verdict with new reasons is said"),
    pytest.param(Verdict("pending", ("waiting for 1 approval(s)",)), ["waiting for 1 approval(s)"], False, None,
                 id="the same reasons again are not"),
    pytest.param(Verdict("pending", ("waiting for 1 approval(s)",)), ["waiting for 1 approval(s)"], True,
                 (GatePending, ["waiting for 1 approval(s)"]), id="unless a person acted: they are answered"),
])
def test_a_verdict_is_said_when_it_changed_or_someone_waits_for_it(verdict, previous, always, said):
    event = verdict_event(verdict, FACTS, IDENT, "sha256:" + "b" * 64, previous, always)
    assert (None if event is None else (type(event), event.reasons)) == said


def test_a_pass_carries_what_the_deployer_needs_from_the_environment():
    event = verdict_event(Verdict("passed", evidence=("signed by ci-release",)), FACTS, IDENT, "sha256:" + "b" * 64,
                          ["waiting"], False)
    assert isinstance(event, GatePassed)
    assert (event.env, event.strategy["canary"]["steps"], event.config, event.driver, event.evidence) == \
        ("prod-eu", [10, 100], {"APP_ENV": "eu"}, "local", ["signed by ci-release"])
    assert event.config_version == PIPELINE.environment("prod-eu").config_version


def verified(env: str) -> VerificationPassed:
    return VerificationPassed(deployment_id="d", service="pay", version="1.0.0", digest=DIGEST, env=env, config={},
                              config_version="sha256:" + "c" * 64, checks={})


@pytest.mark.parametrize(("env", "requested"), [
    pytest.param("staging", ["prod-eu", "prod-us"], id="a fan-out requests each side"),
    pytest.param("prod-eu", ["global"], id="each side requests the join"),
    pytest.param("global", [], id="the last requests nothing"),
    pytest.param("gone", [], id="an environment no longer in the pipeline requests nothing"),
])
def test_a_verification_requests_each_environment_that_comes_after(env, requested):
    assert [r.env for r in requests_after(PIPELINE, verified(env))] == requested
    assert requests_after(None, verified(env)) == []
