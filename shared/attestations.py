"""SLSA provenance attestations of an artifact, verified offline against trusted keys: which builder made exactly
this digest, from which source repository and commit.

Where they are. cosign keeps the attestations of `registry/repository@sha256:D` as an image tagged `sha256-D.att`
in the same repository; each layer (media type application/vnd.dsse.envelope.v1+json, annotated with its
predicateType) is one DSSE envelope, `{"payloadType": "application/vnd.in-toto+json", "payload": base64 of an
in-toto Statement, "signatures": [{"keyid": "", "sig": base64}]}`. A file artifact has them in a `*.intoto.jsonl`
file (the SLSA convention): one envelope JSON per line.

What is accepted. An envelope of payloadType application/vnd.in-toto+json, one of whose signatures verifies with a
trusted key over DSSE's pre-authentication encoding, PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body)
SP body, and whose payload is an in-toto Statement: `_type` https://in-toto.io/Statement/v0.1 (what cosign 2.6
writes for every `--type`) or …/v1 (the current in-toto attestation spec; in-toto 3.1, the Python tool, writes no
Statement: its envelopes carry link metadata, `_type` "link", under the same payloadType, and are refused). The
Statement must name the digest among its subjects (digest.sha256), be of predicateType https://slsa.dev/provenance/v1,
and its predicate must name the builder (runDetails.builder.id, compared exactly), the source and the commit.

The source rule. A repository URI is compared as `scheme://authority/path`, its `git+` prefix and an `@ref` suffix of
its path left out, and then exactly: `git+https://github.com/acme/payments@refs/heads/main` names
https://github.com/acme/payments; `…/payments-evil`, `…/payments.git`, `…/Payments` or `…/payments/` do not (no
substring, case or suffix folding). The source is named by a buildDefinition.resolvedDependencies entry's `uri`, or
by externalParameters (`workflow.repository`, as GitHub's build types write it, or `source`, a URI or `{uri}`). The
commit is the digest (`gitCommit`, or `sha1`) of the resolvedDependencies entries naming the source: all of them
together must name exactly the expected commit (so a parameter alone, without a dependency, names no commit).

Refusals are results, not errors: ProvenanceRefused with its kind and a one-line reason; of several envelopes the
one closest to being accepted is reported. The registry's own faults are left to the caller, as in
shared.signatures: RegistryUnavailable (retry), RegistryDenied (a login to fix).

Why DSSE by hand, not securesystemslib's dsse.Envelope (1.x): its verify skips every key whose keyid is not the
signature's, and cosign writes keyid "" (DSSE makes keyid an optional, unauthenticated hint), so each trusted key
would have to be renamed "" and which of ours verified would be lost; its from_dict keys signatures by keyid (two
cosign signatures collide and raise), changes the dict it is given and raises KeyError, TypeError or binascii.Error
on hostile shapes. PAE is one line, and the signatures are checked by shared.signature_keys as for image
signatures. The tests check ours against securesystemslib both ways, and against cosign.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

from shared.oci import DIGEST, MANIFESTS, BadImage, ImageReference, ImageUnknown, Registry, parse_reference
from shared.signature_keys import TrustedKey

DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1")
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
MAX_MANIFEST_BYTES = 256 * 1024
"""The `.att` manifest: ~500 bytes per attestation, a few KiB more with a transparency-log bundle."""
MAX_ENVELOPES = 32
"""Envelopes one artifact may have (`cosign attest` adds one each time it runs, unless --replace)."""
MAX_ENVELOPE_BYTES = 512 * 1024
"""One envelope: a provenance is a few KiB, more with many dependencies; base64 adds a third."""
MAX_SIGNATURES = 8
"""Signatures one envelope may carry: each is tried with every trusted key."""
MAX_SIGNATURE_CHARS = 2048
"""Base64 of a signature: 96 for ECDSA P-256, 684 for RSA-4096."""
MAX_URI_CHARS = 2048
_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


class ProvenanceRefusal(enum.Enum):
    """Why an artifact is not taken as built by the builder from the source and commit."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNTRUSTED = "untrusted"
    OTHER_SUBJECT = "other-subject"
    NOT_PROVENANCE = "not-provenance"
    WRONG_BUILDER = "wrong-builder"
    WRONG_SOURCE = "wrong-source"
    WRONG_COMMIT = "wrong-commit"


@dataclass(frozen=True)
class Provenance:
    """A provenance of the digest, signed by the trusted key `key_id`, naming the builder, source and commit."""

    key_id: str
    builder: str
    source: str
    """The URI that named the source, as attested (e.g. git+https://github.com/acme/payments@refs/heads/main)."""
    commit: str
    predicate_type: str
    envelope_digest: str
    """sha256 of the envelope's bytes."""


@dataclass(frozen=True)
class ProvenanceRefused:
    """No accepted provenance: `kind`, and `reason` in one line."""

    kind: ProvenanceRefusal
    reason: str


@dataclass(frozen=True)
class Collected:
    """The DSSE envelopes of an artifact, as bytes, and a one-line problem for each that could not be taken."""

    envelopes: tuple[bytes, ...] = ()
    problems: tuple[str, ...] = ()


def attestation_tag(digest: str) -> str:
    """The tag cosign keeps the attestations of `digest` under: sha256-<hex>.att."""
    return digest.replace(":", "-", 1) + ".att"


async def verify_provenance(registry: Registry, image: str | ImageReference, keys: Sequence[TrustedKey], *,
                            builder: str, source: str, commit: str) -> Provenance | ProvenanceRefused:
    """Whether `image` (registry/repository@sha256:…) has a provenance by one of `keys` naming builder, source and
    commit, fetching its attestations."""
    ref = parse_reference(image) if isinstance(image, str) else image
    if ref.digest is None:
        raise ValueError(f"{ref} names no digest: a provenance is checked for exactly one digest")
    _Expected.of(ref.digest, keys, builder, source, commit)  # a caller's mistake fails before any request
    found = await fetch_attestations(registry, ref)
    return judge_provenance(found.envelopes, ref.digest, keys, builder=builder, source=source, commit=commit,
                            problems=found.problems)


async def fetch_attestations(registry: Registry, ref: ImageReference) -> Collected:
    """The envelopes in the `.att` image of ref's digest (none, without a problem, if there is no such tag)."""
    if ref.digest is None:
        raise ValueError(f"{ref} names no digest: attestations are kept for exactly one digest")
    tag = attestation_tag(ref.digest)
    try:
        manifest = await registry.resolve(ref, tag, max_bytes=MAX_MANIFEST_BYTES)
    except ImageUnknown:
        return Collected()
    except BadImage as error:
        return Collected(problems=(f"the attestations {tag}: {error}",))
    layers = manifest.content.get("layers")
    if manifest.media_type not in MANIFESTS or not isinstance(layers, list):
        return Collected(problems=(f"the attestations {tag} are not an image manifest with layers",))
    if len(layers) > MAX_ENVELOPES:
        return Collected(problems=(f"the attestations {tag} are {len(layers)} layers, more than {MAX_ENVELOPES}",))
    envelopes, problems = [], []
    for layer in layers:
        found = await _fetch_envelope(registry, ref, layer)
        (envelopes if isinstance(found, bytes) else problems).append(found)
    return Collected(tuple(envelopes), tuple(problems))


async def _fetch_envelope(registry: Registry, ref: ImageReference, layer: object) -> bytes | str:
    """One layer's blob within the limits, or what is wrong with it."""
    if not (isinstance(layer, dict) and isinstance(layer.get("digest"), str) and type(layer.get("size")) is int):
        return "a layer without a digest and a size"
    if layer.get("mediaType") != DSSE_ENVELOPE:
        return f"a layer of type {_shown(layer.get('mediaType'))}, not {DSSE_ENVELOPE}"
    if not 0 <= layer["size"] <= MAX_ENVELOPE_BYTES:
        return f"a layer of {layer['size']} bytes, not 0 to {MAX_ENVELOPE_BYTES}"
    try:
        envelope = await registry.fetch_blob(ref, layer["digest"], layer["size"])
    except ImageUnknown:
        return f"an envelope blob {_shown(layer['digest'])} the registry does not have"
    except BadImage as error:
        return f"its envelope: {error}"
    if len(envelope) != layer["size"]:
        return f"an envelope of {len(envelope)} bytes, not the {layer['size']} its layer states"
    return envelope


def read_attestation_file(path: Path, max_bytes: int) -> list[bytes]:
    """The envelopes of a `*.intoto.jsonl` file, one JSON per line (ValueError if too large or not lines of JSON)."""
    with path.open("rb") as file:
        data = file.read(max_bytes + 1)
    return attestation_lines(data, path, max_bytes)


def attestation_lines(data: bytes, path: Path | str, max_bytes: int) -> list[bytes]:
    """The envelopes in the bytes of a `*.intoto.jsonl` file read (up to max_bytes + 1) from `path`."""
    if len(data) > max_bytes:
        raise ValueError(f"the attestations {_shown(str(path), 240)} have more than {max_bytes} bytes")
    envelopes = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        if _json(line.strip()) is None:
            raise ValueError(f"line {number} of the attestations {_shown(str(path), 240)} is not JSON")
        envelopes.append(line.strip())
    if len(envelopes) > MAX_ENVELOPES:
        raise ValueError(f"the attestations {_shown(str(path), 240)} are {len(envelopes)} lines, more than "
                         f"{MAX_ENVELOPES}")
    return envelopes


def judge_provenance(envelopes: Sequence[bytes], digest: str, keys: Sequence[TrustedKey], *, builder: str,
                     source: str, commit: str, problems: Sequence[str] = ()) -> Provenance | ProvenanceRefused:
    """The first envelope that is an accepted provenance of `digest`; else the most telling refusal (`problems`:
    envelopes that could not be taken, as Collected names them)."""
    expected = _Expected.of(digest, keys, builder, source, commit)
    rejected = [_Rejected(ProvenanceRefusal.MALFORMED, f"is malformed: {problem}") for problem in problems]
    for envelope in envelopes:
        outcome = _judge_one(envelope, expected, keys)
        if isinstance(outcome, Provenance):
            return outcome
        rejected.append(outcome)
    if not rejected:
        return ProvenanceRefused(ProvenanceRefusal.MISSING, f"{digest} has no attestation")
    kind, reason = min(rejected, key=lambda refusal: _TELLING.index(refusal.kind))
    of = f" (none of its {len(rejected)} attestations is accepted)" if len(rejected) > 1 else ""
    return ProvenanceRefused(kind, f"the attestation of {digest} {reason}{of}")


_TELLING = (ProvenanceRefusal.WRONG_COMMIT, ProvenanceRefusal.WRONG_SOURCE, ProvenanceRefusal.WRONG_BUILDER,
            ProvenanceRefusal.NOT_PROVENANCE, ProvenanceRefusal.OTHER_SUBJECT, ProvenanceRefusal.UNTRUSTED,
            ProvenanceRefusal.MALFORMED)
"""Which refusal several envelopes report: the one closest to being accepted."""


class _Expected(NamedTuple):
    sha256: str
    builder: str
    repository: str
    commit: str

    @classmethod
    def of(cls, digest: str, keys: Sequence[TrustedKey], builder: str, source: str, commit: str) -> "_Expected":
        """What the caller asks for, checked (ValueError: a mistake of the caller, not of the attestation)."""
        if not isinstance(digest, str) or not DIGEST.match(digest):
            raise ValueError(f"{_shown(digest)} is not a sha256 digest (sha256:<64 hex>)")
        if not keys:
            raise ValueError("no trusted key: a provenance check needs at least one")
        if not isinstance(builder, str) or not builder:
            raise ValueError("no builder: a provenance check names the builder id it expects")
        repository = _repository(source)
        if repository is None or repository != source.removeprefix("git+"):
            raise ValueError(f"source {_shown(source)} is not a repository URI (scheme://host/path, `git+` allowed, "
                             "no @ref)")
        if not isinstance(commit, str) or not _COMMIT.match(commit):
            raise ValueError(f"commit {_shown(commit)} is not a full git commit (40 or 64 lowercase hex)")
        return cls(digest.removeprefix("sha256:"), builder, repository, commit)


class _Rejected(NamedTuple):
    kind: ProvenanceRefusal
    reason: str


class _Envelope(NamedTuple):
    payload: bytes
    signatures: tuple[bytes, ...]


def _judge_one(raw: bytes, expected: _Expected, keys: Sequence[TrustedKey]) -> Provenance | _Rejected:
    """The provenance this envelope is, or why it is not taken."""
    envelope = _envelope(raw)
    if isinstance(envelope, str):
        return _Rejected(ProvenanceRefusal.MALFORMED, f"is malformed: {envelope}")
    signed = pae(IN_TOTO_PAYLOAD, envelope.payload)
    signer = next((key for signature in envelope.signatures for key in keys
                   if key.fits(signature) and key.verifies(signature, signed)), None)
    if signer is None:
        names = ", ".join(key.key_id for key in keys)
        return _Rejected(ProvenanceRefusal.UNTRUSTED, f"verifies with no trusted key ({names}): made with another "
                                                      "key, or its payload or signature altered")
    by = f"by {signer.key_id}"
    statement = _json(envelope.payload)
    if not (isinstance(statement, dict) and statement.get("_type") in STATEMENT_TYPES
            and isinstance(statement.get("subject"), list) and isinstance(statement.get("predicateType"), str)):
        found = statement.get("_type") if isinstance(statement, dict) else None
        return _Rejected(ProvenanceRefusal.MALFORMED, f"{by} is over a payload that is not an in-toto Statement "
                                                      f"(_type {_shown(found)})")
    if not any(_names(subject, expected.sha256) for subject in statement["subject"]):
        return _Rejected(ProvenanceRefusal.OTHER_SUBJECT, f"{by} is about other subjects "
                                                          f"({_subjects(statement['subject'])})")
    if statement["predicateType"] != SLSA_PROVENANCE_V1:
        return _Rejected(ProvenanceRefusal.NOT_PROVENANCE, f"{by} is of predicate type "
                                                           f"{_shown(statement['predicateType'])}, not "
                                                           f"{SLSA_PROVENANCE_V1}")
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        return _Rejected(ProvenanceRefusal.MALFORMED, f"{by} has a provenance predicate that is not a JSON object")
    return _judge_predicate(predicate, expected, signer.key_id, "sha256:" + hashlib.sha256(raw).hexdigest())


def _judge_predicate(predicate: dict, expected: _Expected, key_id: str, envelope_digest: str) -> Provenance | _Rejected:
    """Builder, source and commit of a provenance v1 predicate, against what is expected."""
    builder = _at(predicate, "runDetails", "builder", "id")
    if builder != expected.builder:
        named = f"the builder {_shown(builder)}" if isinstance(builder, str) else "no builder (runDetails.builder.id)"
        return _Rejected(ProvenanceRefusal.WRONG_BUILDER, f"by {key_id} names {named}, not {expected.builder!r}")
    dependencies = _objects(_at(predicate, "buildDefinition", "resolvedDependencies"))
    naming = [dependency for dependency in dependencies if _repository(dependency.get("uri")) == expected.repository]
    parameters = [uri for uri in _parameter_sources(_at(predicate, "buildDefinition", "externalParameters"))
                  if _repository(uri) == expected.repository]
    if not naming and not parameters:
        uris = [dependency.get("uri") for dependency in dependencies][:3]
        return _Rejected(ProvenanceRefusal.WRONG_SOURCE, f"by {key_id} names no dependency or parameter from "
                                                         f"{expected.repository!r} (its dependencies: "
                                                         f"{', '.join(_shown(uri) for uri in uris) or 'none'})")
    commits = {commit for dependency in naming for commit in _commits(dependency.get("digest"))}
    if commits != {expected.commit}:
        shown = ", ".join(_shown(commit) for commit in sorted(commits)[:3])
        named = f"the commit {shown}" if commits else "no commit (digest gitCommit or sha1)"
        return _Rejected(ProvenanceRefusal.WRONG_COMMIT, f"by {key_id} names {named} of {expected.repository!r}, "
                                                         f"not {expected.commit}")
    source = naming[0]["uri"] if naming else parameters[0]
    return Provenance(key_id, builder, source, expected.commit, SLSA_PROVENANCE_V1, envelope_digest)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature is over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def _envelope(raw: bytes) -> _Envelope | str:
    """The payload and raw signatures of a DSSE envelope of an in-toto payload, or what is wrong with it."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        return f"an envelope of {len(raw)} bytes, more than {MAX_ENVELOPE_BYTES}"
    parsed = _json(raw)
    if not isinstance(parsed, dict):
        return "not a DSSE envelope (a JSON object)"
    if parsed.get("payloadType") != IN_TOTO_PAYLOAD:
        return f"its payloadType is {_shown(parsed.get('payloadType'))}, not {IN_TOTO_PAYLOAD}"
    payload, signatures = _base64(parsed.get("payload")), parsed.get("signatures")
    if payload is None:
        return "its payload is not base64"
    if not isinstance(signatures, list) or not signatures:
        return "an envelope without signatures"
    if len(signatures) > MAX_SIGNATURES:
        return f"an envelope of {len(signatures)} signatures, more than {MAX_SIGNATURES}"
    raw_signatures = []
    for signature in signatures:
        sig = signature.get("sig") if isinstance(signature, dict) else None
        if isinstance(sig, str) and len(sig) > MAX_SIGNATURE_CHARS:
            return f"a signature of {len(sig)} characters, more than {MAX_SIGNATURE_CHARS}"
        decoded = _base64(sig)
        if not decoded:
            return "a signature whose sig is empty or not base64"
        raw_signatures.append(decoded)
    return _Envelope(payload, tuple(raw_signatures))


def _base64(text: object) -> bytes | None:
    """Standard base64, as cosign and securesystemslib write it (cosign's own subject check reads no other)."""
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _json(data: bytes) -> object | None:
    """UTF-8 JSON, or None (not UTF-8, not JSON, nested past the interpreter's depth, a number of 4,300+ digits)."""
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _names(subject: object, sha256: str) -> bool:
    """Whether an in-toto subject (ResourceDescriptor) names this sha256."""
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return isinstance(digest, dict) and digest.get("sha256") == sha256


def _subjects(subjects: list) -> str:
    """The first subjects' sha256 digests, shortened, for a reason."""
    digests = [subject.get("digest") for subject in subjects if isinstance(subject, dict)]
    shown = [_shown(digest["sha256"], 23) for digest in digests if isinstance(digest, dict) and "sha256" in digest]
    return ", ".join(shown[:3]) or "none with a sha256 digest"


def _at(document: object, *path: str) -> object:
    """document[path[0]][path[1]]…, or None where a step is not a JSON object."""
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _objects(value: object) -> list[dict]:
    """The JSON objects in a JSON list (none if it is not a list)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _parameter_sources(parameters: object) -> list[object]:
    """The repository URIs externalParameters names: workflow.repository, and source (a URI or {uri})."""
    if not isinstance(parameters, dict):
        return []
    source = parameters.get("source")
    return [_at(parameters, "workflow", "repository"), _at(parameters, "source", "uri") if isinstance(source, dict)
            else source]


def _commits(digest: object) -> list[str]:
    """The git commits a dependency's digest set names (gitCommit, sha1)."""
    if not isinstance(digest, dict):
        return []
    return [value for value in (digest.get("gitCommit"), digest.get("sha1")) if isinstance(value, str)]


def _repository(uri: object) -> str | None:
    """scheme://authority/path of a repository URI, its `git+` prefix and the `@ref` of its path left out."""
    if not isinstance(uri, str) or len(uri) > MAX_URI_CHARS:
        return None
    scheme, separator, rest = uri.removeprefix("git+").partition("://")
    authority, slash, path = rest.partition("/")
    path = path.split("@", 1)[0]
    if not (scheme and separator and authority and path) or any(character.isspace() for character in uri):
        return None
    return f"{scheme}://{authority}/{path}"


def _shown(value: object, limit: int = 80) -> str:
    """A value from outside, for a one-line reason: a string quoted and cut, anything else by its type."""
    if isinstance(value, str):
        return repr(value[:limit] + ("…" if len(value) > limit else ""))
    return "none" if value is None else f"a JSON {type(value).__name__}"
