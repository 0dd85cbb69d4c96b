"""Key-based cosign signatures of an image, verified against trusted public keys: who signed exactly this digest.

cosign keeps the signatures of `registry/repository@sha256:D` as an image tagged `sha256-D.sig` in the same
repository. Each of its layers is one signature: the blob is a simple-signing JSON payload
(`{"critical": {"identity": {"docker-reference": …}, "image": {"docker-manifest-digest": "sha256:D"},
"type": "cosign container image signature"}, "optional": …}`) and the layer's annotation
`dev.cosignproject.cosign/signature` is the base64 signature over exactly those payload bytes.
sigstore-python verifies identity-based (keyless) signatures only, so this is the documented check done
with `cryptography`, for the keys shared.signature_keys takes: ECDSA P-256 with SHA-256 (what `cosign
generate-key-pair` makes) and RSA (PKCS#1 v1.5, SHA-256, 2048 bits or more).

An image is signed by a key when some layer's signature verifies with that key over its payload and that
payload names D with the type of a cosign container image signature. As `cosign verify --key` does, the
payload's docker-reference is not compared (a signature stays valid on a mirror) and no transparency log
is asked: nothing but the registry the image names is contacted (and, as for every pull, the storage it
redirects a blob to, if it does).

A refusal is a result, not an error: Refused with its kind and a one-line reason. UNSIGNED: no `.sig` tag
(or one naming no signature). MALFORMED: a signature manifest, payload or signature that is not what cosign
writes, too large, or whose blob is not the one its manifest names. OTHER_IMAGE: a trusted key signed another
digest (a signature copied to this image's tag). UNTRUSTED: no trusted key verifies the signature: it was
made with another key, or its payload or signature was altered after signing; the three cannot be told
apart (checking against the wrong key and checking altered bytes fail alike), and none of them is a
signature of ours. The registry's own faults are left to the caller: RegistryUnavailable (retry),
RegistryDenied (a login to fix).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Sequence

from shared.oci import MANIFESTS, BadImage, ImageReference, ImageUnknown, Registry, parse_reference
from shared.signature_keys import TrustedKey

if TYPE_CHECKING:
    from shared.contracts.events import SupplyChain

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_TYPE = "cosign container image signature"
MAX_MANIFEST_BYTES = 256 * 1024
"""The `.sig` manifest: ~400 bytes per signature, a few KiB more with a transparency-log bundle."""
MAX_SIGNATURES = 32
"""Layers (signatures) a `.sig` manifest may name: each is one more blob to fetch and key set to try."""
MAX_PAYLOAD_BYTES = 32 * 1024
"""A simple-signing payload: ~250 bytes, more with `cosign sign -a` annotations."""
MAX_SIGNATURE_CHARS = 2048
"""Base64 of a signature: 96 for ECDSA P-256, 684 for RSA-4096."""


class Refusal(enum.Enum):
    """Why an image is not taken as signed."""

    UNSIGNED = "unsigned"
    MALFORMED = "malformed"
    OTHER_IMAGE = "other-image"
    UNTRUSTED = "untrusted"


@dataclass(frozen=True)
class Signed:
    """The image carries a signature of its digest by the trusted key `key_id`."""

    image: str
    """registry/repository@digest."""
    key_id: str
    signatures: str
    """The digest of the `.sig` manifest the signature was found in."""
    docker_reference: str
    """The repository the payload names (not compared: cosign does not either)."""


@dataclass(frozen=True)
class Refused:
    """The image is not signed by a trusted key: `kind`, and `reason` in one line."""

    image: str
    kind: Refusal
    reason: str


Verdict = Signed | Refused


@dataclass(frozen=True)
class Signature:
    """One layer of a `.sig` manifest: its payload bytes and base64 signature, or what is wrong with it."""

    payload: bytes = b""
    signature: str = ""
    problem: str | None = None


def signature_tag(digest: str) -> str:
    """The tag cosign keeps the signatures of `digest` under: sha256-<hex>.sig."""
    return digest.replace(":", "-", 1) + ".sig"


async def verify(registry: Registry, image: str | ImageReference, keys: Sequence[TrustedKey]) -> Verdict:
    """Whether `image` (registry/repository@sha256:…) is signed by one of `keys`, fetching its signatures."""
    ref = parse_reference(image) if isinstance(image, str) else image
    if ref.digest is None:
        raise ValueError(f"{ref} names no digest: a signature is checked for exactly one digest")
    if not keys:
        raise ValueError("no trusted key: a signature check needs at least one")
    location = ref.at(ref.digest)
    found = await fetch_signatures(registry, ref)
    if isinstance(found, Refused):
        return found
    manifest_digest, signatures = found
    return judge(location, ref.digest, manifest_digest, signatures, keys)


async def fetch_signatures(registry: Registry, ref: ImageReference) -> tuple[str, list[Signature]] | Refused:
    """The `.sig` manifest's digest and its signatures (each with its payload fetched), or why there are none."""
    location = ref.at(ref.digest)
    tag = signature_tag(ref.digest)
    try:
        manifest = await registry.resolve(ref, tag, max_bytes=MAX_MANIFEST_BYTES)
    except ImageUnknown:
        return Refused(location, Refusal.UNSIGNED, f"{location} is not signed: {ref.name} has no tag {tag}")
    except BadImage as error:
        return Refused(location, Refusal.MALFORMED, f"the signatures of {location}: {error}")
    layers = manifest.content.get("layers")
    if manifest.media_type not in MANIFESTS or not isinstance(layers, list):
        return Refused(location, Refusal.MALFORMED, f"the signatures of {location} ({tag}) are not an image "
                                                    "manifest with layers")
    if not layers:
        return Refused(location, Refusal.UNSIGNED, f"{location} is not signed: {tag} names no signature")
    if len(layers) > MAX_SIGNATURES:
        return Refused(location, Refusal.MALFORMED, f"the signatures of {location} ({tag}) are {len(layers)} "
                                                    f"layers, more than {MAX_SIGNATURES}")
    return manifest.digest, [await _fetch_signature(registry, ref, layer) for layer in layers]


async def _fetch_signature(registry: Registry, ref: ImageReference, layer: object) -> Signature:
    """One layer: its annotation's signature and its blob (the payload), within the limits."""
    if not (isinstance(layer, dict) and isinstance(layer.get("digest"), str) and type(layer.get("size")) is int):
        return Signature(problem="a layer without a digest and a size")
    if layer.get("mediaType") != SIMPLE_SIGNING:
        return Signature(problem=f"a layer of type {str(layer.get('mediaType'))[:80]!r}, not {SIMPLE_SIGNING}")
    annotations = layer.get("annotations")
    signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(signature, str) or not signature:
        return Signature(problem=f"a layer without the annotation {SIGNATURE_ANNOTATION}")
    if len(signature) > MAX_SIGNATURE_CHARS:
        return Signature(problem=f"a signature of {len(signature)} characters, more than {MAX_SIGNATURE_CHARS}")
    if layer["size"] < 0:
        return Signature(problem="a layer of negative size")
    if layer["size"] > MAX_PAYLOAD_BYTES:
        return Signature(problem=f"a payload of {layer['size']} bytes, more than {MAX_PAYLOAD_BYTES}")
    try:
        payload = await registry.fetch_blob(ref, layer["digest"], layer["size"])
    except ImageUnknown:
        return Signature(problem=f"a payload blob {layer['digest'][:80]} the registry does not have")
    except BadImage as error:
        return Signature(problem=f"its payload: {error}")
    if len(payload) != layer["size"]:
        return Signature(problem=f"a payload of {len(payload)} bytes, not the {layer['size']} its layer states")
    return Signature(payload, signature)


def judge(image: str, digest: str, manifest_digest: str, signatures: Sequence[Signature],
          keys: Sequence[TrustedKey]) -> Verdict:
    """Signed by the first signature that verifies with a key and names `digest`; else the most telling refusal."""
    refusals: list[_Rejected] = []
    for signature in signatures:
        outcome = _judge_one(digest, signature, keys)
        if isinstance(outcome, _Accepted):
            return Signed(image, outcome.key_id, manifest_digest, outcome.reference)
        refusals.append(outcome)
    kind, reason = min(refusals, key=lambda refusal: _TELLING.index(refusal.kind))
    of = f" (none of its {len(signatures)} signatures is accepted)" if len(signatures) > 1 else ""
    return Refused(image, kind, f"the signature of {image} {reason}{of}")


_TELLING = (Refusal.OTHER_IMAGE, Refusal.UNTRUSTED, Refusal.MALFORMED)
"""Which refusal a manifest of several signatures reports: the one closest to being accepted."""


class _Accepted(NamedTuple):
    key_id: str
    reference: str


class _Rejected(NamedTuple):
    kind: Refusal
    reason: str


def _judge_one(digest: str, signature: Signature, keys: Sequence[TrustedKey]) -> _Accepted | _Rejected:
    """The key that signed `digest` with this signature, or why it is not taken."""
    if signature.problem is not None:
        return _Rejected(Refusal.MALFORMED, f"is malformed: {signature.problem}")
    try:
        raw = base64.b64decode(signature.signature, validate=True)
    except (binascii.Error, ValueError):
        return _Rejected(Refusal.MALFORMED, "is malformed: its annotation is not base64")
    if not any(key.fits(raw) for key in keys):
        return _Rejected(Refusal.UNTRUSTED, "has the form of no trusted key's signature (ECDSA: ASN.1 DER, RSA: "
                                            "the key's size): made with another kind of key, or altered")
    signer = next((key for key in keys if key.verifies(raw, signature.payload)), None)
    if signer is None:
        names = ", ".join(key.key_id for key in keys)
        return _Rejected(Refusal.UNTRUSTED, f"verifies with no trusted key ({names}): made with another key, "
                                            "or its payload or signature altered")
    claims = _claims(signature.payload)
    if claims is None:
        return _Rejected(Refusal.MALFORMED, f"by {signer.key_id} is over a payload that is not simple-signing JSON")
    kind, signed_digest, reference = claims
    if kind != SIGNATURE_TYPE:
        return _Rejected(Refusal.MALFORMED, f"by {signer.key_id} is of type {kind[:80]!r}, not {SIGNATURE_TYPE!r}")
    if signed_digest != digest:
        return _Rejected(Refusal.OTHER_IMAGE, f"by {signer.key_id} is over another digest, {signed_digest[:80]}")
    return _Accepted(signer.key_id, reference)


def _claims(payload: bytes) -> tuple[str, str, str] | None:
    """(critical.type, critical.image.docker-manifest-digest, critical.identity.docker-reference) of a
    simple-signing payload, or None if it is not one."""
    try:
        parsed = json.loads(payload)
    except ValueError:
        return None
    critical = parsed.get("critical") if isinstance(parsed, dict) else None
    if not isinstance(critical, dict):
        return None
    image, identity = critical.get("image"), critical.get("identity")
    kind = critical.get("type")
    signed = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    reference = identity.get("docker-reference", "") if isinstance(identity, dict) else ""
    if not isinstance(kind, str) or not isinstance(signed, str) or not isinstance(reference, str):
        return None
    return kind, signed, reference


def carried(found: "SupplyChain") -> list[Signature]:
    """The signatures an artifact.registered carries, as `judge` takes them."""
    return [Signature(problem=item) if isinstance(item, str) else Signature(*item) for item in found.payloads()]
