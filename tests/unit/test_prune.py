"""The prune contract: pipeline.applied names only environments its definition drops, and an
environment.pruned removes the environment from the ledger's status."""

import pytest
from pydantic import ValidationError

from services.ledger.projection import statements
from shared.contracts import limits
from shared.contracts.events import EnvironmentPruned, PipelineApplied, new_event
from shared.contracts.pipeline import PipelineError, parse_pipeline

DIGEST = "sha256:" + "a" * 64
DEFINITION = {"service": "payments", "environments": [{"name": "dev", "gates": []}]}


def test_a_pipeline_applied_may_prune_an_environment_its_definition_drops():
    applied = PipelineApplied(service="payments", pipeline_version=DIGEST, definition=DEFINITION,
                              applied_by="ops", prune=["qa"])
    assert applied.prune == ["qa"]
    assert PipelineApplied(service="payments", pipeline_version=DIGEST, definition=DEFINITION,
                           applied_by="ops").prune == []  # events from before the field still parse


def test_a_pipeline_applied_that_prunes_an_environment_it_keeps_is_refused():
    with pytest.raises(ValidationError, match="prune names environments the pipeline keeps: dev"):
        PipelineApplied(service="payments", pipeline_version=DIGEST, definition=DEFINITION, applied_by="ops",
                        prune=["dev", "qa"])


def test_a_pipeline_with_more_environments_than_the_limit_is_refused():
    names = "\n".join(f"  - name: e{index}" for index in range(limits.MAX_ENVIRONMENTS + 1))
    with pytest.raises(PipelineError, match=f"at most {limits.MAX_ENVIRONMENTS} environments, not {limits.MAX_ENVIRONMENTS + 1}"):
        parse_pipeline(f"service: payments\nenvironments:\n{names}\n")


def test_an_environment_pruned_deletes_its_status_row():
    event = new_event(EnvironmentPruned(service="payments", env="qa", version="1.0.0", digest=DIGEST,
                                        stopped=["qa"], pipeline_version=DIGEST, applied_by="ops"), source="/t")
    assert [(table, sql.split(" where")[0], args) for table, sql, args in statements(event)] == [
        ("environments", "delete from environments", ("payments", "qa"))]
