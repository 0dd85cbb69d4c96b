"""Gates' handler on the in-memory repository: a release requested for an environment waits for its artifact,
then for an approval by someone other than its author, and passes; no database, no Kafka."""

from datetime import UTC, datetime
from types import SimpleNamespace

from services.gates.handlers import GatesHandlers
from services.gates.repository import MemoryRepository
from shared.contracts.events import (ApprovalGranted, ArtifactRegistered, GatePassed, GatePending, PipelineApplied,
                           PromotionRequested, new_event)
from shared.contracts.pipeline import parse_pipeline
from shared.platform.settings import Settings

DIGEST = "sha256:" + "1" * 64
PIPELINE = parse_pipeline("service: pay\nenvironments:\n  - {name: prod, gates: [{approval: {min: 1}}]}\n")
NOW = datetime(2026, 12, 3, 9, tzinfo=UTC)


def event(data):
    return new_event(data, source="/tests")


async def test_a_request_waits_for_its_artifact_then_an_approval_not_by_its_author_then_passes(tmp_path):
    handlers = GatesHandlers(SimpleNamespace(settings=Settings(var_dir=tmp_path)), clock=lambda: NOW)
    store = MemoryRepository()
    applied = PipelineApplied(service="pay", pipeline_version=PIPELINE.content_hash,
                              definition=PIPELINE.model_dump(mode="json"), applied_by="ops")
    assert await handlers.apply(store, event(applied)) == []
    [waiting] = await handlers.apply(store, event(PromotionRequested(service="pay", version="1.0.0", digest=DIGEST,
                                                                     env="prod")))
    assert isinstance(waiting, GatePending) and waiting.reasons == ["the artifact is not registered yet"]
    registered = ArtifactRegistered(service="pay", version="1.0.0", digest=DIGEST, kind="file", commit="c0ffee",
                                    author="alice", build_event_id="b1", checks={})
    [waiting] = await handlers.apply(store, event(registered))
    assert waiting.reasons == ["waiting for 1 approval(s) (not by the author, alice)"]
    [refused] = await handlers.apply(store, event(ApprovalGranted(service="pay", version="1.0.0", env="prod",
                                                                  approver="alice", digest=DIGEST)))
    assert refused.reasons == ["waiting for 1 approval(s) (alice is the author and cannot approve)"]
    [passed] = await handlers.apply(store, event(ApprovalGranted(service="pay", version="1.0.0", env="prod",
                                                                 approver="bob", digest=DIGEST)))
    assert isinstance(passed, GatePassed) and (passed.env, passed.digest) == ("prod", DIGEST)
    assert await store.pending("pay") == []
