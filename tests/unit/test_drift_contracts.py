"""Drift in the contracts: `on_drift` in the pipeline (hashes of pipelines without it unchanged), the drift events'
bounds, what the ledger's status makes of them, and what the rollback service does after a failed restore."""

import pytest
from pydantic import ValidationError

from services.ledger.projection import statements
from services.rollback.domain import rolls_back_after_failure
from shared.contracts.events import (DeploymentStarted, DriftDetected, DriftResolved, MAX_DIFFERENCES,
                                     VerificationFailed, new_event)
from shared.contracts.pipeline import PipelineError, parse_pipeline

DIGEST = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64


PINNED = """
service: payments
environments:
  - name: dev
    config: {APP_ENV: dev, FEATURE_NEW_UI: "true"}
  - name: staging
    gates: [{evidence: integration-tests}]
    strategy: {blue_green: {retire_after: 10m}}
  - name: prod
    gates: [{approval: {min: 1, not_author: true}}]
    config: {APP_ENV: prod, DB_DSN: {secret: payments/prod/dsn}}
"""


def test_a_pipeline_that_does_not_set_on_drift_keeps_its_content_hash_and_config_versions():
    pipeline = parse_pipeline(PINNED)  # the hashes below are what the code before on_drift gave this file
    assert pipeline.content_hash == "sha256:9a5693c72c5a51daa4e044a1b889f6c636f0891f8b39855088b5ab6ffbbc6828"
    assert all("on_drift" not in environment for environment in pipeline.model_dump(mode="json")["environments"])
    assert pipeline.environments[-1].config_version == \
        "sha256:f9f973e49a57c845fd13ef164f16337509a9213bbe10c8817f411df41536efaa"


def test_on_drift_restore_is_kept_in_the_dump_and_does_not_change_the_config_version():
    text = "service: payments\nenvironments:\n  - name: prod\n    config: {APP_ENV: prod}\n"
    reporting = parse_pipeline(text)
    restoring = parse_pipeline(text + "    on_drift: restore\n")
    assert (reporting.environments[0].on_drift, restoring.environments[0].on_drift) == ("report", "restore")
    assert restoring.model_dump(mode="json")["environments"][0]["on_drift"] == "restore"
    assert type(restoring).model_validate(restoring.model_dump(mode="json")) == restoring
    assert restoring.content_hash != reporting.content_hash
    assert restoring.environments[0].config_version == reporting.environments[0].config_version


def test_an_unknown_on_drift_is_named_at_its_line():
    with pytest.raises(PipelineError) as error:
        parse_pipeline("service: payments\nenvironments:\n  - name: prod\n    on_drift: fix\n", "p.yaml")
    assert str(error.value).startswith("p.yaml:4:15: environments[0].on_drift: Input should be 'report' or 'restore'")


def detected(**changes) -> DriftDetected:
    fields = dict(service="payments", env="prod", version="1.0.0", digest=DIGEST, config_version=CONFIG, slot="prod",
                  driver="container", differences=["container promote-payments--prod--0 exited with code 137"])
    return DriftDetected(**(fields | changes))


def test_a_drift_event_lists_at_least_one_and_at_most_twenty_printable_lines():
    for bad in ([], [f"line {n}" for n in range(MAX_DIFFERENCES + 1)], ["x" * 301], ["a\nb"]):
        with pytest.raises(ValidationError):
            detected(differences=bad)
    with pytest.raises(ValidationError):
        detected(slot="prod.purple")
    assert detected(slot="prod.blue").slot == "prod.blue"


def test_status_shows_an_environment_drifted_with_what_differs_until_the_drift_is_resolved():
    found = new_event(detected(), source="/promote/deployer", event_id="drift-1")
    [(table, sql, args)] = statements(found)
    assert table == "environments" and "state = 'drifted'" in sql
    assert '"differences": ["container promote-payments--prod--0 exited with code 137"]' in args[2]
    resolved = DriftResolved(service="payments", env="prod", version="1.0.0", digest=DIGEST, how="gone",
                             drift_id="drift-1")
    [(table, sql, _args)] = statements(new_event(resolved, source="/promote/deployer"))
    assert table == "environments" and "drift = null" in sql and "then 'verified'" in sql


def test_a_restore_shows_as_restoring_while_it_runs():
    started = DeploymentStarted(service="payments", deployment_id="drift-1", version="1.0.0", digest=DIGEST, env="prod",
                                config={}, config_version=CONFIG, purpose="restore")
    [(_table, _sql, args)] = statements(new_event(started, source="/promote/deployer"))
    assert args[5] == "restoring"


@pytest.mark.parametrize("purpose, rolls_back", [("promotion", True), ("reconfigure", True), ("restore", False),
                                                 ("rollback", False)])
def test_only_a_failed_promotion_or_reconfiguration_is_rolled_back_never_a_failed_restore(purpose, rolls_back):
    assert rolls_back_after_failure(purpose) is rolls_back
    VerificationFailed(service="payments", deployment_id="d", version="1.0.0", digest=DIGEST, env="prod", config={},
                       config_version=CONFIG, purpose=purpose, reason="health: no answer", checks={})
