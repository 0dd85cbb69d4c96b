"""What intake keeps beside an image it registers: the signatures (and attestations) its registry holds for the
digest, exactly as found, within the budget of one event.

Intake does not judge them: it trusts no key. Gates checks them against its own trusted keys for the
environments whose gates ask (shared.signatures.judge), and an evidence bundle carries them so that anyone can
check again offline. Collecting them when the artifact is registered means every environment judges the same
bytes, a rebuild of gates from the topics judges them again without a registry, and a signature removed from
the registry later does not change what was proven. So CI signs (and attests) before it publishes
build.completed.
"""

from __future__ import annotations

import base64

from shared.events import MAX_SUPPLY_CHAIN_BYTES, MAX_SUPPLY_CHAIN_ITEMS, FoundSignature, SupplyChain
from shared.oci import ImageReference, Registry
from shared.signatures import Refusal, Refused, fetch_signatures


async def collect(registry: Registry, ref: ImageReference) -> SupplyChain:
    """The signatures of `ref`'s digest in its registry (RegistryUnavailable/RegistryDenied are the caller's)."""
    assert ref.digest is not None
    found = await fetch_signatures(registry, ref)
    if isinstance(found, Refused):
        problems = () if found.kind is Refusal.UNSIGNED else (found.reason,)
        return SupplyChain(problems=problems)
    manifest_digest, signatures = found
    budget = MAX_SUPPLY_CHAIN_BYTES
    kept: list[FoundSignature] = []
    problems: list[str] = []
    for signature in signatures[:MAX_SUPPLY_CHAIN_ITEMS]:
        if signature.problem is not None:
            kept.append(FoundSignature(problem=signature.problem[:500]))
            continue
        if len(signature.payload) > budget:
            problems.append(f"signatures past the first {len(kept)} are not kept: their payloads exceed the "
                            f"{MAX_SUPPLY_CHAIN_BYTES} bytes one artifact.registered carries")
            break
        budget -= len(signature.payload)
        kept.append(FoundSignature(payload=base64.b64encode(signature.payload).decode(), signature=signature.signature))
    return SupplyChain(signatures_manifest=manifest_digest, signatures=tuple(kept), problems=tuple(problems))
