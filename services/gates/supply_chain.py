"""Signature gates, pure: do the signatures intake found beside the artifact hold for gates' trusted keys?

Nothing the artifact's event carries is trusted: its payloads and signatures are checked here, each time,
against the keys the gate names that gates holds (shared.signatures.judge), for exactly the release's digest.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

from shared.events import SupplyChain
from shared.signature_keys import TrustedKey
from shared.signatures import Signature, Signed, judge
from shared.trust_gates import SignatureGate


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
        told = f": {'; '.join(found.problems)}" if found.problems else ""
        return f"{what}: {location} is not signed{told}", None
    verdict = judge(location, digest, found.signatures_manifest or "", _signatures(found), keys)
    if isinstance(verdict, Signed):
        return None, f"{what}: signed by {verdict.key_id} (signatures {verdict.signatures})"
    return f"{what}: {verdict.reason}{unusable}", None


def _signatures(found: SupplyChain) -> list[Signature]:
    """The signatures as shared.signatures judges them (a payload that is not base64 is malformed)."""
    signatures = []
    for item in found.signatures:
        if item.problem is not None:
            signatures.append(Signature(problem=item.problem))
            continue
        try:
            payload = base64.b64decode(item.payload, validate=True)
        except (binascii.Error, ValueError):
            signatures.append(Signature(problem="a payload that is not base64"))
            continue
        signatures.append(Signature(payload, item.signature))
    return signatures
