"""The deployer's rules that were in its handler and its canaries' task, as tables (services/deployer/domain.py):
what an order asks for, which strategy a deployment runs with, which environments a newly applied pipeline
redeploys, and `decide`: a canary's next move, an operator's command, an order beside a canary."""

from datetime import UTC, datetime, timedelta

import pytest

from services.deployer.analysis import Figures
from services.deployer.domain import (ROLLBACK_SWITCH, Abort, Advance, CanaryView, Complete, Deploy, EnvironmentState,
                                      Hold, Ignore, Order, Publish, Target, Wait, decide, order_of, reconfigurations,
                                      strategy_for)
from shared.contracts.events import ApprovalGranted, CanaryCommanded, GatePassed, RollbackOrdered, new_event
from shared.contracts.pipeline import Analysis, BlueGreen, Canary, Metric, parse_pipeline

DIGEST = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64
COMMON = dict(service="pay", version="1.0.0", digest=DIGEST, env="prod", config={"APP_ENV": "prod"},
              config_version=CONFIG)


def test_a_gate_passed_is_a_promotion_with_the_environments_strategy():
    event = new_event(GatePassed(**COMMON, strategy={"canary": {"steps": [10, 100]}}, driver="local",
                                 pipeline_version=CONFIG), source="/promote/gates")
    target, strategy = order_of(event)
    assert (target.deployment_id, target.purpose, target.env, target.config) == \
        (event.id, "promotion", "prod", {"APP_ENV": "prod"})
    assert isinstance(strategy, Canary) and strategy.steps == (10, 100)


def test_a_rollback_order_is_a_rolling_rollback_and_anything_else_is_no_order():
    event = new_event(RollbackOrdered(**COMMON, rollback_id="r1", from_version="2.0.0", reason="2.0.0 failed",
                                      requested_by="ops"),
                      source="/promote/rollback")
    target, strategy = order_of(event)
    assert (target.purpose, target.rollback_id, strategy) == ("rollback", "r1", "rolling")
    assert order_of(new_event(ApprovalGranted(service="pay", version="1.0.0", env="prod", approver="bob"),
                              source="/promote/api")) is None


def target(purpose: str = "promotion", driver: str = "local") -> Target:
    return Target("d1", "pay", "prod", "1.0.0", DIGEST, {}, CONFIG, purpose=purpose, driver=driver)


@pytest.mark.parametrize(("strategy", "deployed", "routed", "runs_with"), [
    pytest.param("rolling", target("rollback"), True, ROLLBACK_SWITCH, id="a rollback behind the router switches"),
    pytest.param("rolling", target("rollback"), False, "rolling", id="a rollback of a plain slot rolls"),
    pytest.param("rolling", target("rollback", driver="noop"), True, "rolling", id="noop serves nothing to route"),
    pytest.param("rolling", target("promotion"), True, "rolling", id="a promotion keeps its strategy"),
    pytest.param(BlueGreen(retire_after=60), target("rollback"), True, BlueGreen(retire_after=60),
                 id="a strategy named by the order is kept"),
])
def test_the_strategy_a_deployment_runs_with(strategy, deployed, routed, runs_with):
    assert strategy_for(strategy, deployed, routed) == runs_with


PIPELINE = parse_pipeline("""\
service: pay
environments:
  - {name: dev, config: {APP_ENV: dev, FLAG: "on"}}
  - {name: prod, strategy: {blue_green: {retire_after: 1m}}, config: {APP_ENV: prod}}
  - {name: audit, driver: noop}
""")


def test_a_new_pipeline_redeploys_only_where_the_running_release_has_another_config():
    running = {
        "dev": {"version": "1.0.0", "digest": DIGEST, "config_version": "sha256:" + "0" * 64, "location": None},
        "prod": {"version": "0.9.0", "digest": DIGEST, "config_version": PIPELINE.environment("prod").config_version,
                 "location": None},
    }
    [(redeployed, strategy)] = reconfigurations(PIPELINE, running, lambda env: f"reconfigure-{env}")
    assert (redeployed.deployment_id, redeployed.env, redeployed.version, redeployed.purpose, strategy) == \
        ("reconfigure-dev", "dev", "1.0.0", "reconfigure", "rolling")
    assert (redeployed.config, redeployed.config_version) == \
        ({"APP_ENV": "dev", "FLAG": "on"}, PIPELINE.environment("dev").config_version)
    assert reconfigurations(PIPELINE, {}, str) == [], "nothing runs: nothing to redeploy"


# decide(state, event, now): the move an input calls for in an environment.

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ERRORS = Metric(name="errors", query='rate(x{lane="{{lane}}"}[1m])', success="result < 0.05", interval=10, count=2)
CANARY = Canary(steps=(10, 50, 100), analysis=Analysis(interval=30, min_requests=20, max_error_rate=0.05,
                                                         max_wait=120, metrics=(ERRORS,)))
PLAIN = Canary(steps=(10, 50, 100), analysis=Analysis(interval=30, min_requests=20, max_wait=120))
GOOD = Figures(requests=40, errors=0, error_rate=0.0, p50_ms=2, p95_ms=3, p99_ms=4, max_ms=5)
BAD = Figures(requests=40, errors=10, error_rate=0.25, p50_ms=2, p95_ms=3, p99_ms=4, max_ms=5)
FEW = Figures(requests=3, errors=0, error_rate=0.0, p50_ms=2, p95_ms=3, p99_ms=4, max_ms=5)


def measured(*verdicts: str) -> tuple[dict, ...]:
    return tuple({"metric": "errors", "verdict": verdict, "value": 0.01 if verdict == "passed" else 0.5,
                  "detail": "Prometheus unreachable" if verdict == "inconclusive" else ""} for verdict in verdicts)


def canary(*, step=0, state="running", published=True, ago=40.0, figures=GOOD, taken=(), strategy=PLAIN,
           deployment_id="canary-1") -> CanaryView:
    return CanaryView(deployment_id, state, published, step, strategy, NOW - timedelta(seconds=ago),
                      {"process": "passed"}, figures, taken)


def look(view: CanaryView):
    (move,) = decide(EnvironmentState(canary=view), None, NOW)
    return move


@pytest.mark.parametrize(("view", "expected"), [
    pytest.param(canary(published=False), Publish(), id="a step not yet published is published"),
    pytest.param(canary(state="paused"), Ignore("the canary is paused"), id="a paused canary does not move"),
    pytest.param(canary(ago=10), Wait(20.0), id="before its interval it waits for the rest of it"),
    pytest.param(canary(figures=FEW), Wait(1.0), id="short of its requests it looks again within a second"),
    pytest.param(canary(strategy=CANARY, ago=15, taken=measured("passed")), Wait(5.0),
                 id="a measurement still due is waited for"),
])
def test_a_look_waits_publishes_or_leaves_a_paused_canary_alone(view, expected):
    assert look(view) == expected


def test_a_step_that_passed_advances_with_its_figures_and_the_one_before_the_last_completes():
    advanced = look(canary())
    assert isinstance(advanced, Advance) and advanced.step == 1
    assert advanced.checks["step_10_requests"] == "40" and advanced.checks["process"] == "passed"
    assert isinstance(look(canary(step=1)), Complete)


def test_a_step_whose_figures_fail_aborts_at_its_share_with_the_figures():
    aborted = look(canary(figures=BAD))
    assert isinstance(aborted, Abort) and aborted.reason.startswith("canary analysis at 10% of traffic: error rate")
    assert (aborted.checks["aborted_at_share"], aborted.checks["errors"]) == ("10%", "10")


def test_too_few_requests_at_max_wait_fail_and_never_pass():
    aborted = look(canary(figures=FEW, ago=130))
    assert isinstance(aborted, Abort) and "requests" in aborted.reason


@pytest.mark.parametrize(("on_inconclusive", "taken", "kind"), [
    pytest.param("pause", measured("failed"), Abort, id="a failed metric aborts"),
    pytest.param("pause", measured("inconclusive"), Hold, id="Prometheus unreachable pauses by default"),
    pytest.param("abort", measured("inconclusive"), Abort, id="or aborts, as configured: never a silent pass"),
])
def test_a_metric_that_fails_or_is_inconclusive_stops_the_step_before_its_figures(on_inconclusive, taken, kind):
    strategy = CANARY.model_copy(update={"analysis": CANARY.analysis.model_copy(
        update={"on_inconclusive": on_inconclusive})})
    move = look(canary(strategy=strategy, ago=5, figures=FEW, taken=taken))
    assert isinstance(move, kind) and move.checks["step_10_metric_errors"].startswith("metric errors")
    if kind is Hold:
        assert (move.state, move.because) == ("paused", "metric errors inconclusive: Prometheus unreachable")


def commanded(action: str, reason: str | None = None):
    return new_event(CanaryCommanded(service="pay", env="prod", action=action, requested_by="carol", reason=reason),
                     source="/promote/api")


@pytest.mark.parametrize(("state", "action", "expected"), [
    pytest.param(None, "pause", Ignore("pause: no canary in progress"), id="no canary: nothing"),
    pytest.param("paused", "pause", Ignore("pause: the canary is paused"), id="a pause of a paused one: nothing"),
    pytest.param("running", "resume", Ignore("resume: the canary is running"), id="a resume of a running one"),
    pytest.param("running", "pause", Hold("paused", "paused", {"process": "passed"}, by="carol"), id="pause"),
    pytest.param("paused", "resume", Hold("running", "resumed", {"process": "passed"}, by="carol"), id="resume"),
    pytest.param("paused", "abort", Abort("aborted by carol at 10% of traffic (too slow)", {
        "process": "passed", "aborted_by": "carol", "aborted_at_share": "10%"}), id="abort, even when paused"),
    pytest.param("running", "promote", Complete({"process": "passed", "promoted_by": "carol",
                                                 "promoted_at_share": "10%"}), id="promote now"),
])
def test_an_operator_command_applies_only_where_the_canary_stands(state, action, expected):
    view = None if state is None else canary(state=state)
    assert decide(EnvironmentState(canary=view), commanded(action, "too slow" if action == "abort" else None),
                  NOW) == [expected]


def an_order(deployment_id: str = "order-2") -> Order:
    return Order(Target(deployment_id, "pay", "prod", "2.0.0", DIGEST, {}, CONFIG), "rolling")


def test_an_order_supersedes_another_canary_and_leaves_its_own_alone():
    superseding = decide(EnvironmentState(canary=canary()), an_order(), NOW)
    assert [type(move) for move in superseding] == [Abort, Deploy]
    assert superseding[0].superseded_by == "order-2" and "superseded at 10% of traffic by the deployment of 2.0.0" \
        in superseding[0].reason
    assert decide(EnvironmentState(canary=canary(deployment_id="order-2")), an_order(), NOW) == \
        [Ignore("this order's canary is in progress: it goes on")]
    assert decide(EnvironmentState(), an_order(), NOW) == [Deploy(an_order().target, "rolling")]


def test_an_order_event_is_decided_like_the_order_it_carries_and_other_events_move_nothing():
    passed = new_event(GatePassed(**COMMON, strategy="rolling", driver="local", pipeline_version=CONFIG),
                       source="/promote/gates")
    (move,) = decide(EnvironmentState(), passed, NOW)
    assert isinstance(move, Deploy) and move.target.deployment_id == passed.id
    approval = new_event(ApprovalGranted(service="pay", version="1.0.0", env="prod", approver="bob"), source="/x")
    assert decide(EnvironmentState(), approval, NOW) == []
    assert decide(EnvironmentState(), None, NOW) == []
