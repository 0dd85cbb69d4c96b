"""Unit tests for services.intake.domain: register a build once, by digest, or reject it with a reason."""

import pytest

from services.intake.domain import Fetched, decide_build
from shared.contracts.events import Artifact, ArtifactRegistered, ArtifactRejected, BuildCompleted, PromotionRequested

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def a_build(kind="file") -> BuildCompleted:
    return BuildCompleted(service="payments", version="1.4.0",
                          artifact=Artifact(kind=kind, uri="file:///artifacts/payments-1.4.0", digest=DIGEST),
                          commit="0badc0de", author="alice", checks={"unit-tests": "passed"})


def decide(*, build=None, registered=None, fetched=Fetched("stored"), first_env="dev"):
    return decide_build(build or a_build(), build_event_id="evt-1", registered_digest=registered,
                        fetched=fetched, first_env=first_env)


def test_a_new_artifact_whose_bytes_match_is_registered_and_requested_into_the_first_environment():
    assert decide() == [
        ArtifactRegistered(service="payments", version="1.4.0", digest=DIGEST, kind="file", commit="0badc0de",
                           author="alice", checks={"unit-tests": "passed"}, build_event_id="evt-1"),
        PromotionRequested(service="payments", version="1.4.0", digest=DIGEST, env="dev"),
    ]


def test_without_a_pipeline_the_artifact_is_only_registered():
    decided = decide(first_env=None)
    assert [type(event) for event in decided] == [ArtifactRegistered]
    assert decided[0].digest == DIGEST


def test_the_same_version_announced_again_with_the_same_digest_changes_nothing():
    assert decide(registered=DIGEST) == []


@pytest.mark.parametrize(("changes", "reason", "detail_says"), [
    pytest.param(dict(registered=OTHER), "immutability-violation", f"payments:1.4.0 is already registered as {OTHER}",
                 id="the same version with another digest violates immutability"),
    pytest.param(dict(fetched=Fetched("mismatch")), "digest-mismatch",
                 "digest mismatch: the file's bytes do not match the claimed digest",
                 id="bytes whose digest is not the claimed one are a mismatch"),
    pytest.param(dict(fetched=Fetched("unreachable", "404 Not Found")), "artifact-unreachable", "404 Not Found",
                 id="an artifact the store cannot read is unreachable"),
    pytest.param(dict(fetched=None), "artifact-unreachable", "not fetched",
                 id="an artifact that was not fetched is unreachable"),
    pytest.param(dict(build=a_build(kind="oci"), fetched=Fetched("mismatch", "the image resolves to other bytes")),
                 "digest-mismatch", "the image resolves to other bytes", id="an image of other bytes is a mismatch"),
    pytest.param(dict(build=a_build(kind="oci"), fetched=Fetched("denied", "registry r refused the login")),
                 "registry-denied", "registry r refused the login", id="an image the registry denies is refused so"),
])
def test_a_build_that_cannot_be_registered_is_rejected_with_its_reason_and_never_promoted(changes, reason, detail_says):
    decided = decide(**changes)
    assert len(decided) == 1
    rejected = decided[0]
    assert isinstance(rejected, ArtifactRejected)
    assert (rejected.reason, rejected.service, rejected.version, rejected.digest, rejected.build_event_id) == (
        reason, "payments", "1.4.0", DIGEST, "evt-1")
    assert detail_says in rejected.detail
    assert not any(isinstance(event, PromotionRequested) for event in decided)


def test_a_mismatch_tells_neither_the_file_s_hash_nor_any_digest_but_the_claimed_one_in_its_event():
    rejected = decide(fetched=Fetched("mismatch"))[0]
    assert "sha256:" not in rejected.detail and rejected.digest == DIGEST


def test_immutability_is_checked_before_the_bytes_so_a_matching_file_cannot_overwrite_a_version():
    decided = decide(registered=OTHER, fetched=Fetched("stored"), first_env="dev")
    assert [event.reason for event in decided] == ["immutability-violation"]
