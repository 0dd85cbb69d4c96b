"""Durable canaries, the pure parts: when a step can be judged, and a target kept in a row reads back the same."""

import json

import pytest

from services.rollback.domain import rolls_back_after_failure
from services.deployer.domain import Target, step_wait, target_from_json, target_json
from shared.contracts.events import DeploymentProgressed
from shared.contracts.pipeline import Resources

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("elapsed", "requests", "expected"), [
    (0.0, 0, 600.0),       # a 10-minute step just begun: judged in 10 minutes, whatever comes meanwhile
    (599.5, 500, 0.5),     # enough requests, but the interval is not over
    (600.0, 20, 0.0),      # the interval is over with min_requests: judge now
    (600.0, 19, 1.0),      # one request short: look again within a second
    (899.6, 3, 0.4),       # ... but never past max_wait
    (900.0, 3, 0.0),       # max_wait reached with too few: judge now (and judge() fails it)
    (1200.0, 0, 0.0),      # a deployer back after a long stop judges at once
])
def test_a_step_is_judged_after_its_interval_with_enough_requests_or_at_max_wait(elapsed, requests, expected):
    assert step_wait(elapsed, requests, interval=600, min_requests=20, max_wait=900) == pytest.approx(expected)


@pytest.mark.parametrize("target", [
    Target("d-1", "payments", "prod", "2.4.1", DIGEST, {"APP_ENV": "prod", "DSN": {"secret": "payments/dsn"}},
           DIGEST, driver="container", location=f"127.0.0.1:18500/payments@{DIGEST}", replicas=3,
           resources=Resources(memory="256m", cpus=0.5)),
    Target("d-2", "payments", "prod", "2.4.1", DIGEST, {}, DIGEST, purpose="rollback", rollback_id="rb-1"),
])
def test_a_target_kept_in_a_canary_row_reads_back_equal(target):
    assert target_from_json(json.loads(json.dumps(target_json(target)))) == target


def test_a_progress_event_names_a_step_within_the_canary():
    fields = dict(service="payments", deployment_id="d-1", version="2.4.1", digest=DIGEST, env="prod", config={},
                  config_version=DIGEST, checks={"step_5_requests": "20"})
    assert DeploymentProgressed(**fields, state="step", step=2, steps=4, share=25).share == 25
    for wrong in ({"step": 0}, {"share": 101}, {"state": "done"}):
        with pytest.raises(ValueError):
            DeploymentProgressed(**{**fields, "state": "step", "step": 1, "steps": 4, "share": 5, **wrong})


def test_a_canary_superseded_by_a_newer_deployment_is_not_rolled_back_but_one_that_failed_is():
    assert rolls_back_after_failure("promotion", superseded=True) is False
    assert rolls_back_after_failure("promotion") is True


@pytest.mark.parametrize(("state", "shown"), [("step", "canary 2/4 at 25%"), ("paused", "canary paused at 25%"),
                                              ("resumed", "canary 2/4 at 25%")])
def test_status_shows_where_a_canary_stands(state, shown):
    from services.ledger.projection import statements
    from shared.contracts.events import new_event

    progressed = DeploymentProgressed(service="payments", deployment_id="d-1", version="2.4.1", digest=DIGEST,
                                      env="prod", config={}, config_version=DIGEST, state=state, step=2, steps=4,
                                      share=25, by="bob" if state != "step" else None)
    [(table, _sql, args)] = statements(new_event(progressed, source="/promote/deployer"))
    assert (table, args[5]) == ("environments", shown)
