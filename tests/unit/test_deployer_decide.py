"""The deployer's rules that were in its handler, as tables (services/deployer/domain.py): what an order asks
for, which strategy a deployment runs with, and which environments a newly applied pipeline redeploys."""

import pytest

from services.deployer.domain import ROLLBACK_SWITCH, Target, order_of, reconfigurations, strategy_for
from shared.contracts.events import ApprovalGranted, GatePassed, RollbackOrdered, new_event
from shared.contracts.pipeline import BlueGreen, Canary, parse_pipeline

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
