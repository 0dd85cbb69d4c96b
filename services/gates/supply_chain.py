"""Signature and provenance gates, pure: do the signatures and attestations intake found beside the artifact
hold for gates' trusted keys?

Nothing the artifact's event carries is trusted: its payloads, envelopes and signatures are checked here, each
time, against the keys the gate names that gates holds (shared.signatures.judge,
shared.attestations.judge_provenance), for exactly the release's digest and the build's commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared.attestations import Provenance, judge_provenance
from shared.contracts.events import SupplyChain
from shared.signature_keys import TrustedKey
from shared.signatures import Signed, carried, judge
from shared.contracts.trust_gates import ProvenanceGate, SignatureGate


def named_keys(trusted: Mapping[str, TrustedKey | str], wanted: Sequence[str]) -> tuple[list[TrustedKey], list[str]]:
    """(the named keys gates holds, why each other named key cannot be used)."""
    keys, missing = [], []
    for key_id in wanted:
        found = trusted.get(key_id)
        if isinstance(found, TrustedKey):
            keys.append(found)
        else:
            missing.append(found or f"key {key_id} is not among the trusted keys (no {key_id}.pub)")
    return keys, missing


def signature_problem(gate: SignatureGate, trusted: Mapping[str, TrustedKey | str], digest: str,
                      location: str | None, found: SupplyChain | None) -> tuple[str | None, str | None]:
    """(why the gate fails, what it accepted): exactly one of them is None."""
    what = f"signed_by {', '.join(gate.signed_by)}"
    keys, missing = named_keys(trusted, gate.signed_by)
    unusable = f" ({'; '.join(missing)})" if missing else ""
    if not keys:
        return f"{what}: no key it names can be used{unusable}", None
    if location is None:
        return f"{what}: the artifact is not an image", None
    if found is None:
        return f"{what}: {location} was registered before intake kept signatures; nothing to check", None
    if not found.signatures:
        told = f": {'; '.join(found.signature_problems)}" if found.signature_problems else ""
        return f"{what}: {location} is not signed{told}", None
    verdict = judge(location, digest, found.signatures_manifest or "", carried(found), keys)
    if isinstance(verdict, Signed):
        return None, f"{what}: signed by {verdict.key_id} (signatures {verdict.signatures})"
    return f"{what}: {verdict.reason}{unusable}", None


def provenance_problem(gate: ProvenanceGate, trusted: Mapping[str, TrustedKey | str], digest: str,
                       commit: str | None, found: SupplyChain | None) -> tuple[str | None, str | None]:
    """(why the gate fails, what it accepted): exactly one of them is None."""
    what = f"provenance from {gate.builder} of {gate.source}"
    if gate.signed_by is not None:
        keys, missing = named_keys(trusted, gate.signed_by)
    else:
        keys, missing = [key for key in trusted.values() if isinstance(key, TrustedKey)], []
    unusable = f" ({'; '.join(missing)})" if missing else ""
    if not keys:
        return f"{what}: no trusted key to check it with{unusable}", None
    if found is None:
        return f"{what}: the artifact was registered before intake kept attestations; nothing to check", None
    if commit is None:
        return f"{what}: the build's commit is not known (registered before gates kept it)", None
    try:
        verdict = judge_provenance(found.envelopes(), digest, keys, builder=gate.builder, source=gate.source, commit=commit,
                                   problems=found.attestation_problems)
    except ValueError as error:  # e.g. a build event whose commit is not a full git commit
        return f"{what}: {error}", None
    if isinstance(verdict, Provenance):
        return None, (f"{what}: attested by {verdict.key_id} for commit {verdict.commit} "
                      f"(envelope {verdict.envelope_digest})")
    return f"{what}: {verdict.reason}{unusable}", None
