"""What intake keeps beside an artifact it registers: the signatures and attestations found for its digest,
exactly as found, within the budget of one event.

For an image, cosign's `sha256-<digest>.sig` (signatures) and `sha256-<digest>.att` (attestations, DSSE
envelopes) in its repository; for a file, the DSSE envelopes of `<file>.intoto.jsonl` beside it (the SLSA
convention), read under the same rules as the file itself (under an artifact root, a regular file, no link).

Intake does not judge them: it trusts no key. Gates checks them against its own trusted keys for the
environments whose gates ask (shared.signatures, shared.attestations), and an evidence bundle carries them so
that anyone can check again offline. Collecting them when the artifact is registered means every environment
judges the same bytes, a rebuild of gates from the topics judges them again without a registry, and a
signature removed from the registry later does not change what was proven. So CI signs and attests before it
publishes build.completed.
"""

from __future__ import annotations

import asyncio
import base64
import os

from shared.artifact_source import ArtifactUnreachable, open_artifact
from shared.attestations import attestation_lines, fetch_attestations
from shared.contracts.events import MAX_SUPPLY_CHAIN_BYTES, MAX_SUPPLY_CHAIN_ITEMS, FoundSignature, SupplyChain
from shared.oci import ImageReference, Registry
from shared.signatures import Refusal, Refused, fetch_signatures

ATTESTATIONS_SUFFIX = ".intoto.jsonl"
PROBLEM_CHARS = 500


class _Budget:
    """The bytes of payloads and envelopes one event may still carry."""

    def __init__(self) -> None:
        self.left = MAX_SUPPLY_CHAIN_BYTES

    def take(self, data: bytes) -> bool:
        if len(data) > self.left:
            return False
        self.left -= len(data)
        return True


async def collect(registry: Registry, ref: ImageReference) -> SupplyChain:
    """The signatures and attestations of `ref`'s digest in its registry (RegistryUnavailable and RegistryDenied
    are the caller's)."""
    assert ref.digest is not None
    budget = _Budget()
    signed, found = await asyncio.gather(fetch_signatures(registry, ref), fetch_attestations(registry, ref))
    manifest, signatures, signature_problems = _signatures(signed, budget)
    attestations, attestation_problems = _envelopes(found.envelopes, budget)
    return SupplyChain(signatures_manifest=manifest, signatures=signatures,
                       signature_problems=signature_problems,
                       attestations=attestations,
                       attestation_problems=_bounded(list(found.problems) + attestation_problems))


def _signatures(found, budget: _Budget) -> tuple[str | None, tuple[FoundSignature, ...], tuple[str, ...]]:
    if isinstance(found, Refused):
        return None, (), () if found.kind is Refusal.UNSIGNED else (found.reason[:PROBLEM_CHARS],)
    manifest_digest, signatures = found
    kept: list[FoundSignature] = []
    problems: list[str] = []
    for signature in signatures[:MAX_SUPPLY_CHAIN_ITEMS]:
        if signature.problem is not None:
            kept.append(FoundSignature(problem=signature.problem[:PROBLEM_CHARS]))
        elif budget.take(signature.payload):
            kept.append(FoundSignature(payload=base64.b64encode(signature.payload).decode(),
                                       signature=signature.signature))
        else:
            problems.append(f"signatures past the first {len(kept)} are not kept: their payloads exceed the "
                            f"{MAX_SUPPLY_CHAIN_BYTES} bytes one artifact.registered carries")
            break
    return manifest_digest, tuple(kept), tuple(problems)


def _envelopes(envelopes: tuple[bytes, ...] | list[bytes], budget: _Budget) -> tuple[tuple[str, ...], list[str]]:
    kept: list[str] = []
    for envelope in envelopes[:MAX_SUPPLY_CHAIN_ITEMS]:
        if not budget.take(envelope):
            return tuple(kept), [f"attestations past the first {len(kept)} are not kept: they exceed the "
                                 f"{MAX_SUPPLY_CHAIN_BYTES} bytes one artifact.registered carries"]
        kept.append(base64.b64encode(envelope).decode())
    return tuple(kept), []


def _bounded(problems: list[str]) -> tuple[str, ...]:
    return tuple(problem[:PROBLEM_CHARS] for problem in problems[:MAX_SUPPLY_CHAIN_ITEMS])


def collect_file(uri: str, roots, max_bytes: int = MAX_SUPPLY_CHAIN_BYTES) -> SupplyChain:
    """The attestations in `<file>.intoto.jsonl` beside the artifact file `uri` names (none if there is none)."""
    try:
        fd, info = open_artifact(uri + ATTESTATIONS_SUFFIX, roots)
    except ArtifactUnreachable as error:
        if str(error).startswith("no file at"):
            return SupplyChain()
        return SupplyChain(attestation_problems=(str(error)[:PROBLEM_CHARS],))
    with open(fd, "rb", buffering=0) as file:
        data = file.read(max_bytes + 1)
    try:
        envelopes = attestation_lines(data, os.path.basename(uri) + ATTESTATIONS_SUFFIX, max_bytes)
    except ValueError as error:
        return SupplyChain(attestation_problems=(str(error)[:PROBLEM_CHARS],))
    attestations, problems = _envelopes(envelopes, _Budget())
    return SupplyChain(attestations=attestations, attestation_problems=_bounded(problems))
