"""What gates says on the bus for each verdict, whom a verification requests next, and `decide`: the whole rule of
an input (services/gates/domain), as tables, without a database."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.gates.domain import (Decision, Facts, Pending, Release, State, Verdict, decide, requests_after,
                                   verdict_event)
from shared.contracts.events import ApprovalGranted, GateFailed, GatePassed, GatePending, VerificationPassed
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


GATED = parse_pipeline("""\
service: pay
environments:
  - {name: staging, config: {APP_ENV: staging}}
  - name: prod
    after: [staging]
    config: {APP_ENV: prod}
    gates:
      - {approval: {from: [release-managers], min: 1, not_author: true}}
      - {soak: 10m}
""")
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
WAITING = Pending("pay", "1.0.0", "prod", DIGEST, ["waiting for 1 approval(s) from release-managers (not by the "
                                                   "author, alice)"])
PIPELINE_VERSION = "sha256:" + "b" * 64


def at_prod(*, approvals=None, verified_ago: timedelta | None = timedelta(hours=1), reasons=None) -> tuple:
    facts = Facts(pipeline=GATED, release=Release("pay", "1.0.0", DIGEST, "alice"),
                  verified_at={} if verified_ago is None else {"staging": NOW - verified_ago},
                  approvals=approvals or {}, approver_groups={who: frozenset({"release-managers"})
                                                              for who in (approvals or {})})
    return (WAITING if reasons is None else replace(WAITING, reasons=reasons)), facts


def said(decision) -> list[tuple[str, str, tuple]]:
    return [(type(e).__name__, e.env, tuple(getattr(e, "reasons", ()))) for e in decision.events]


APPROVAL = ApprovalGranted(service="pay", version="1.0.0", env="prod", approver="bob", digest=DIGEST)


@pytest.mark.parametrize(("promotion", "event", "events", "outcome"), [
    pytest.param(at_prod(), None, [], "pending", id="a timer with the same reasons says nothing"),
    pytest.param(at_prod(), APPROVAL, [("GatePending", "prod", tuple(WAITING.reasons))], "pending",
                 id="a person who acted is answered even when nothing changed"),
    pytest.param(at_prod(reasons=[]), None, [("GatePending", "prod", tuple(WAITING.reasons))], "pending",
                 id="new reasons are said"),
    pytest.param(at_prod(approvals={"bob": "granted"}), None, [("GatePassed", "prod", ())], "passed",
                 id="an approval not by the author and a soak done pass"),
    pytest.param(at_prod(approvals={"alice": "granted"}), APPROVAL,
                 [("GatePending", "prod", ("waiting for 1 approval(s) from release-managers (alice is the author "
                                           "and cannot approve)",))], "pending",
                 id="the author's own approval does not count"),
    pytest.param(at_prod(approvals={"bob": "rejected"}), None, [("GateFailed", "prod", ("rejected by bob",))],
                 "failed", id="a rejection fails"),
    pytest.param(at_prod(verified_ago=None), None, [("GatePending", "prod", ("not yet verified in staging",))],
                 "pending", id="nothing passes before its upstream verified the release"),
])
def test_an_input_judges_each_pending_promotion_and_says_what_changed(promotion, event, events, outcome):
    decision = decide(State(PIPELINE_VERSION, GATED, (promotion,)), event, NOW)
    assert said(decision) == events
    assert [(pending.env, verdict.outcome) for pending, verdict in decision.verdicts] == [("prod", outcome)]


def test_a_soak_still_running_sets_the_timer_for_when_it_ends():
    promotion = at_prod(approvals={"bob": "granted"}, verified_ago=timedelta(minutes=4))
    ((_, verdict),) = decide(State(None, GATED, (promotion,)), None, NOW).verdicts
    assert verdict.outcome == "pending" and verdict.wake_at == NOW + timedelta(minutes=6)


def test_a_verification_requests_what_follows_and_judges_what_waits():
    decision = decide(State(PIPELINE_VERSION, GATED, (at_prod(approvals={"bob": "granted"}),)), verified("staging"),
                      NOW)
    assert [type(e).__name__ for e in decision.events] == ["PromotionRequested", "GatePassed"]


def test_nothing_pending_decides_nothing():
    assert decide(State(None, GATED), APPROVAL, NOW) == Decision(())
