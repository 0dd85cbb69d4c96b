"""The deployer's state as its own events tell it (recovery.fold): what a rebuilt deployer takes as each
deployment's outcome, each environment's ports and live lane, what was promoted there, and the canaries in
progress; pure, without Kafka or a database (the disaster drill on the stack is tests/e2e/test_disaster.py)."""

from services.deployer.recovery import fold
from shared.contracts.events import (DeploymentFailed, DeploymentProgressed, DeploymentStarted, DeploymentSucceeded,
                           EnvironmentPruned, VerificationFailed, VerificationPassed, new_event)

CONFIG_VERSION = "sha256:" + "c" * 64


def fields(deployment_id: str, env: str = "prod", version: str = "1.0.0") -> dict:
    return dict(deployment_id=deployment_id, service="pay", version=version, digest="sha256:" + version[0] * 64,
                env=env, config={}, config_version=CONFIG_VERSION)


def rolled(deployment_id: str, port: int, verified: bool = True, **more):
    """A rolling deployment's events: started, succeeded on `port`, verified (or not)."""
    verdict = VerificationPassed(**fields(deployment_id, **more), checks={}) if verified else \
        VerificationFailed(**fields(deployment_id, **more), reason="health: 500", checks={})
    return [DeploymentStarted(**fields(deployment_id, **more)),
            DeploymentSucceeded(**fields(deployment_id, **more), port=port), verdict]


def events(*datas):
    return [new_event(data, source="/promote/deployer") for data in datas]


def test_a_rolling_environment_keeps_the_port_it_served_on_and_what_was_verified_there():
    folded = fold(events(*rolled("d1", 18300), *rolled("d2", 18300, version="2.0.0")))
    place = folded.places[("pay", "prod")]
    assert (place.slot_port, place.promoted, place.slot_release, place.replaced) == (18300, "d2", "d2", False)
    assert {d.id: d.status for d in folded.deployments.values()} == {"d1": "verified", "d2": "verified"}


def test_a_failed_rolling_start_replaced_what_was_promoted():
    folded = fold(events(*rolled("d1", 18300), *rolled("d2", 18300, verified=False, version="2.0.0")))
    place = folded.places[("pay", "prod")]
    assert (place.promoted, place.replaced, folded.deployments["d2"].reason) == ("d1", True, "health: 500")


def test_a_deployment_refused_before_it_started_leaves_the_promoted_release_as_it_was():
    folded = fold(events(*rolled("d1", 18300), DeploymentStarted(**fields("d2", version="2.0.0")),
                         DeploymentFailed(**fields("d2", version="2.0.0"), reason="missing secret")))
    place = folded.places[("pay", "prod")]
    assert (place.promoted, place.replaced, folded.deployments["d2"].status) == ("d1", False, "failed")


def test_a_routed_environment_keeps_its_router_port_its_lanes_ports_and_its_live_lane():
    folded = fold(events(
        DeploymentStarted(**fields("d1")),
        DeploymentSucceeded(**fields("d1"), port=18400, lane="blue", lane_port=18401),
        VerificationPassed(**fields("d1"), checks={}),
        DeploymentStarted(**fields("d2", version="2.0.0")),
        DeploymentSucceeded(**fields("d2", version="2.0.0"), port=18400, lane="green", lane_port=18402),
        VerificationPassed(**fields("d2", version="2.0.0"), checks={})))
    place = folded.places[("pay", "prod")]
    assert (place.route_port, place.lane_ports, place.live) == (18400, {"blue": 18401, "green": 18402}, "green")
    assert place.lane_releases == {"blue": "d1", "green": "d2"} and place.slot_port is None


def test_a_canary_in_progress_is_at_the_step_its_last_progress_names():
    canary = fields("d2", version="2.0.0")
    folded = fold(events(
        DeploymentStarted(**fields("d1")),
        DeploymentSucceeded(**fields("d1"), port=18400, lane="blue", lane_port=18401),
        VerificationPassed(**fields("d1"), checks={}),
        DeploymentStarted(**canary),
        DeploymentProgressed(**canary, state="step", step=1, steps=3, share=10, lane="green", lane_port=18402,
                             serving="blue"),
        DeploymentProgressed(**canary, state="step", step=2, steps=3, share=50, checks={"step_10_requests": "40"},
                             lane="green", lane_port=18402, serving="blue")))
    deployment = folded.deployments["d2"]
    assert deployment.canary_in_progress and deployment.lane == "green"
    assert (deployment.progressed.step, deployment.progressed.checks) == (2, {"step_10_requests": "40"})
    place = folded.places[("pay", "prod")]
    assert (place.live, place.promoted, place.lane_ports["green"]) == ("blue", "d1", 18402)


def test_a_canary_that_ended_is_not_in_progress():
    canary = fields("d2", version="2.0.0")
    folded = fold(events(
        DeploymentStarted(**canary),
        DeploymentProgressed(**canary, state="step", step=1, steps=2, share=10, lane="green", lane_port=18402,
                             serving="blue"),
        DeploymentSucceeded(**canary, port=18400, lane="green", lane_port=18402),
        VerificationFailed(**canary, reason="canary analysis at 10%: errors", checks={})))
    assert not folded.deployments["d2"].canary_in_progress
    assert folded.deployments["d2"].status == "failed"


def test_a_pruned_environment_is_forgotten_and_its_ports_with_it():
    folded = fold(events(*rolled("d1", 18300), EnvironmentPruned(service="pay", env="prod", version="1.0.0",
                                                                 digest="sha256:" + "1" * 64, stopped=["prod"],
                                                                 pipeline_version=CONFIG_VERSION,
                                                                 applied_by="ops")))
    assert folded.places == {} and folded.deployments["d1"].status == "verified"


def test_a_deployment_with_no_outcome_is_in_flight():
    folded = fold(events(DeploymentStarted(**fields("d1"))))
    assert folded.deployments["d1"].status == "started" and not folded.deployments["d1"].canary_in_progress
    assert folded.deployments["d1"].target.deployment_id == "d1"
