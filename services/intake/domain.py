"""Intake's decisions, pure: is this build a new artifact, a repeat, or a violation?"""

from dataclasses import dataclass
from typing import Literal

from shared.artifacts import MISMATCH
from shared.contracts.events import (ArtifactRegistered, ArtifactRejected, BuildCompleted, EventData,
                                     PromotionRequested, SupplyChain)


@dataclass(frozen=True)
class Fetched:
    """What the store did with the artifact's URI (it compares the bytes with the claimed digest)."""

    outcome: Literal["stored", "mismatch", "unreachable", "denied"]
    detail: str = ""
    """Why the store could not read the file or the registry refused the image, for `unreachable` (never the
    file's content, nor the digest of bytes the publisher may not read)."""
    location: str | None = None
    """An image's `registry/repository@digest` once checked."""
    supply_chain: SupplyChain | None = None
    """The signatures (and attestations) found beside it."""


def decide_build(
    build: BuildCompleted,
    *,
    build_event_id: str,
    registered_digest: str | None,
    fetched: Fetched | None,
    first_env: str | None,
) -> list[EventData]:
    """Register the artifact and request its first promotion, or reject it with a reason."""
    claimed = build.artifact.digest

    def reject(reason: str, detail: str) -> list[EventData]:
        return [ArtifactRejected(service=build.service, version=build.version, digest=claimed,
                                 reason=reason, detail=detail, build_event_id=build_event_id)]

    if registered_digest is not None:
        if registered_digest == claimed:
            return []  # the same artifact announced again: already registered, nothing to do
        return reject("immutability-violation",
                      f"{build.service}:{build.version} is already registered as {registered_digest}")
    if fetched is None or fetched.outcome == "unreachable":
        return reject("artifact-unreachable", fetched.detail if fetched else "not fetched")
    if fetched.outcome == "denied":
        return reject("registry-denied", fetched.detail)
    if fetched.outcome == "mismatch":
        # never the hash of bytes the publisher may not read
        return reject("digest-mismatch", fetched.detail or MISMATCH)
    registered = ArtifactRegistered(
        service=build.service, version=build.version, digest=claimed, kind=build.artifact.kind,
        commit=build.commit, author=build.author, checks=build.checks, build_event_id=build_event_id,
        location=fetched.location, tag=build.artifact.uri if build.artifact.kind == "oci" else None,
        supply_chain=fetched.supply_chain,
    )
    if first_env is None:
        return [registered]  # promotion is requested once a pipeline is applied
    return [registered, PromotionRequested(service=build.service, version=build.version, digest=claimed, env=first_env)]
