"""SLSA provenance attestations (shared/attestations.py) against the real cosign, both ways.

Every attestation is made by `cosign attest --key … --type slsaprovenance1` (cosign wraps the predicate file in an
in-toto Statement of the image's digest and signs it into a DSSE envelope, a layer of the image's `.att` tag) on the
private registry of tests/cosign_support.py, for the example image. Each case also asks `cosign verify-attestation
--key … --type slsaprovenance1` and states its answer: cosign verifies what we accept, and refuses what we refuse
for a missing attestation, an unknown key, a tampered envelope, another subject or another predicate type. Where
cosign takes what we refuse, the test says so in its name: builder, source and commit (cosign reads a predicate only
through a CUE or Rego policy, and none is given), and an envelope whose payloadType key is spelt otherwise (Go's JSON
matches keys regardless of case).
"""

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

from shared.attestations import (DSSE_ENVELOPE, IN_TOTO_PAYLOAD, SLSA_PROVENANCE_V1, Provenance, ProvenanceRefusal,
                                 ProvenanceRefused, attestation_tag, verify_provenance)
from shared.oci import Registry, parse_reference
from tests.cosign_support import COSIGN_MARKS, binary, cosign, host, keys, pushed, registry  # noqa: F401 (fixtures)

pytestmark = COSIGN_MARKS

BUILDER = "https://ci.example/builders/payments@v1"
REPOSITORY = "https://git.example/acme/payments"
COMMIT = "3f2a9c81d4e5b6a7980c1d2e3f4a5b6c7d8e9f01"


def provenance(builder: str = BUILDER, repository: str = REPOSITORY, commit: str = COMMIT) -> dict:
    """An SLSA provenance v1 predicate, as a CI builder writes it (GitHub's shape: a workflow and its source)."""
    return {
        "buildDefinition": {
            "buildType": "https://ci.example/buildtypes/image/v1",
            "externalParameters": {"workflow": {"repository": repository, "ref": "refs/heads/main",
                                                "path": ".ci/build.yaml"}},
            "resolvedDependencies": [{"uri": f"git+{repository}@refs/heads/main", "digest": {"gitCommit": commit}}],
        },
        "runDetails": {"builder": {"id": builder}, "metadata": {"invocationID": "build-42"}},
    }


async def judged(registry: Registry, image: str, keys, source: str = REPOSITORY) -> Provenance | ProvenanceRefused:
    return await verify_provenance(registry, image, keys, builder=BUILDER, source=source, commit=COMMIT)


async def attestations_of(registry: Registry, image: str):
    ref = parse_reference(image)
    return await registry.resolve(ref, attestation_tag(ref.digest))


async def first_envelope(registry: Registry, image: str) -> tuple[dict, dict]:
    """The `.att` manifest of `image` and its first envelope, parsed."""
    manifest = (await attestations_of(registry, image)).content
    layer = manifest["layers"][0]
    return manifest, json.loads(await registry.fetch_blob(parse_reference(image), layer["digest"], layer["size"]))


async def replace_first_envelope(registry: Registry, image: str, manifest: dict, envelope: dict) -> None:
    """Push `envelope` as a blob and `manifest`, naming it as its first layer, under image's `.att` tag."""
    ref = parse_reference(image)
    data = json.dumps(envelope).encode()
    layer = manifest["layers"][0]
    layer["digest"], layer["size"] = await registry.push_blob(ref, data), len(data)
    await registry.push_manifest(ref, json.dumps(manifest).encode(), manifest["mediaType"],
                                 reference=attestation_tag(ref.digest))


def sslib_verifies(envelope: dict, public_pem: bytes, scheme: str = "ecdsa-sha2-nistp256") -> bool:
    """Whether securesystemslib's DSSE verifies `envelope` with this key, named as the signature names it (it tries
    only a key of the signature's keyid; from_crypto takes keyid "" for none and computes one)."""
    parsed = Envelope.from_dict(json.loads(json.dumps(envelope)))  # a copy: from_dict rewrites the dict it reads
    named = SSlibKey.from_crypto(load_pem_public_key(public_pem), scheme=scheme)
    key = SSlibKey(next(iter(parsed.signatures)), named.keytype, named.scheme, named.keyval)
    try:
        parsed.verify([key], 1)
    except VerificationError:
        return False
    return True


async def test_a_provenance_by_a_trusted_key_is_accepted_and_cosign_agrees(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "att-good")
    cosign.attest(keys.release[0], image, provenance())
    verdict = await judged(registry, image, keys.trusted("ci-rsa", "ci-release"))
    assert verdict == Provenance("ci-release", BUILDER, f"git+{REPOSITORY}@refs/heads/main", COMMIT,
                                 SLSA_PROVENANCE_V1, verdict.envelope_digest), verdict
    assert cosign.verifies_attestation(keys.release[1], image)
    manifest, envelope = await first_envelope(registry, image)
    assert manifest["layers"][0]["mediaType"] == DSSE_ENVELOPE
    assert manifest["layers"][0]["digest"] == verdict.envelope_digest
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert envelope["payloadType"] == IN_TOTO_PAYLOAD and envelope["signatures"][0]["keyid"] == ""
    assert statement["_type"] == "https://in-toto.io/Statement/v0.1"  # what cosign 2.6 writes, for every --type
    assert statement["subject"] == [{"name": f"{host}/payments",
                                     "digest": {"sha256": parse_reference(image).digest.removeprefix("sha256:")}}]
    assert sslib_verifies(envelope, keys.release[1].read_bytes())  # an independent DSSE verifier takes it too


async def test_an_rsa_key_imported_into_cosign_is_accepted_and_names_itself(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "att-rsa")
    cosign.attest(keys.rsa[0], image, provenance())
    verdict = await judged(registry, image, keys.trusted("ci-release", "ci-rsa"))
    assert isinstance(verdict, Provenance) and verdict.key_id == "ci-rsa", verdict
    assert cosign.verifies_attestation(keys.rsa[1], image)


async def test_one_provenance_among_other_attestations_is_enough(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "att-among")
    cosign.attest(keys.release[0], image, {"scan": "clean"}, kind="custom")
    cosign.attest(keys.release[0], image, provenance(builder="https://ci.example/builders/other"))
    cosign.attest(keys.release[0], image, provenance())
    assert len((await attestations_of(registry, image)).content["layers"]) == 3
    verdict = await judged(registry, image, keys.trusted("ci-release"))
    assert isinstance(verdict, Provenance) and verdict.builder == BUILDER, verdict


async def test_an_image_without_attestations_is_refused_as_missing(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "att-none")
    verdict = await judged(registry, image, keys.trusted("ci-release"))
    assert refused(verdict, ProvenanceRefusal.MISSING, "has no attestation")
    assert not cosign.verifies_attestation(keys.release[1], image)


async def test_a_provenance_by_an_unknown_key_is_refused(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "att-unknown")
    cosign.attest(keys.other[0], image, provenance())
    verdict = await judged(registry, image, keys.trusted("ci-release", "ci-rsa"))
    assert refused(verdict, ProvenanceRefusal.UNTRUSTED, "verifies with no trusted key (ci-release, ci-rsa)")
    assert not cosign.verifies_attestation(keys.release[1], image)
    assert cosign.verifies_attestation(keys.other[1], image)


async def test_a_provenance_of_another_builder_is_refused_where_cosign_takes_it(registry, host, binary, cosign,
                                                                                keys):
    image = await pushed(registry, host, binary, "att-builder")
    cosign.attest(keys.release[0], image, provenance(builder="https://ci.example/builders/laptop"))
    verdict = await judged(registry, image, keys.trusted("ci-release"))
    says = f"by ci-release names the builder 'https://ci.example/builders/laptop', not '{BUILDER}'"
    assert refused(verdict, ProvenanceRefusal.WRONG_BUILDER, says)
    assert cosign.verifies_attestation(keys.release[1], image)


@pytest.mark.parametrize("repository", [
    "https://git.example/acme/payments-evil",  # the expected repository is a prefix of it
    "https://git.example/acme",                # it is a prefix of the expected repository
    "https://git.example/acme/payments.git",
    "https://evil.example/git.example/acme/payments",
])
async def test_a_provenance_of_another_source_is_refused_where_cosign_takes_it(registry, host, binary, cosign, keys,
                                                                               repository):
    image = await pushed(registry, host, binary, f"att-source-{repository.rsplit('/', 1)[-1]}")
    cosign.attest(keys.release[0], image, provenance(repository=repository))
    verdict = await judged(registry, image, keys.trusted("ci-release"))
    says = f"from '{REPOSITORY}' (its dependencies: 'git+{repository}@refs/heads/main')"
    assert refused(verdict, ProvenanceRefusal.WRONG_SOURCE, says)
    assert cosign.verifies_attestation(keys.release[1], image)


async def test_the_source_may_be_expected_with_its_git_prefix(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "att-git-prefix")
    cosign.attest(keys.release[0], image, provenance())
    verdict = await judged(registry, image, keys.trusted("ci-release"), source=f"git+{REPOSITORY}")
    assert isinstance(verdict, Provenance), verdict


async def test_a_provenance_of_another_commit_is_refused_where_cosign_takes_it(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "att-commit")
    other = "0" * 40
    cosign.attest(keys.release[0], image, provenance(commit=other))
    verdict = await judged(registry, image, keys.trusted("ci-release"))
    says = f"by ci-release names the commit '{other}' of '{REPOSITORY}', not {COMMIT}"
    assert refused(verdict, ProvenanceRefusal.WRONG_COMMIT, says)
    assert cosign.verifies_attestation(keys.release[1], image)


async def test_the_attestations_of_another_image_copied_to_this_one_are_about_another_subject(registry, host, binary,
                                                                                              cosign, keys):
    attested, target = (await pushed(registry, host, binary, "att-copied-from"),
                        await pushed(registry, host, binary, "att-copied-to"))
    cosign.attest(keys.release[0], attested, provenance())
    copied = await attestations_of(registry, attested)
    await registry.push_manifest(parse_reference(target), copied.raw, copied.media_type,
                                 reference=attestation_tag(parse_reference(target).digest))
    verdict = await judged(registry, target, keys.trusted("ci-release"))
    says = f"by ci-release is about other subjects ('{parse_reference(attested).digest[7:30]}"
    assert refused(verdict, ProvenanceRefusal.OTHER_SUBJECT, says)
    assert not cosign.verifies_attestation(keys.release[1], target)


def _rewrite_builder(envelope: dict, image: str) -> None:
    """A trusted provenance of a builder we do not take, rewritten to name ours."""
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["runDetails"]["builder"]["id"] = BUILDER
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()


def _rewrite_subject(envelope: dict, image: str) -> None:
    """A trusted provenance of another image, rewritten to name this one."""
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = parse_reference(image).digest.removeprefix("sha256:")
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()


def _alter_signature(envelope: dict, image: str) -> None:
    r, s = decode_dss_signature(base64.b64decode(envelope["signatures"][0]["sig"]))
    envelope["signatures"][0]["sig"] = base64.b64encode(encode_dss_signature(r, s + 1)).decode()


@pytest.mark.parametrize("tamper", [_rewrite_builder, _rewrite_subject, _alter_signature])
async def test_a_tampered_envelope_is_refused_by_us_and_by_cosign(registry, host, binary, cosign, keys, tamper):
    image = await pushed(registry, host, binary, f"att-tampered-{tamper.__name__.strip('_')}")
    other = await pushed(registry, host, binary, "att-tampered-other")
    attested = other if tamper is _rewrite_subject else image
    cosign.attest(keys.release[0], attested, provenance(builder="https://ci.example/builders/laptop"
                                                        if tamper is _rewrite_builder else BUILDER))
    manifest, envelope = await first_envelope(registry, attested)
    tamper(envelope, image)
    await replace_first_envelope(registry, image, manifest, envelope)
    verdict = await judged(registry, image, keys.trusted("ci-release"))
    assert refused(verdict, ProvenanceRefusal.UNTRUSTED, "verifies with no trusted key (ci-release)")
    assert not cosign.verifies_attestation(keys.release[1], image)


async def test_an_attestation_of_another_predicate_type_is_not_a_provenance(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "att-custom")
    cosign.attest(keys.release[0], image, provenance(), kind="custom")
    verdict = await judged(registry, image, keys.trusted("ci-release"))
    says = f"is of predicate type 'https://cosign.sigstore.dev/attestation/v1', not {SLSA_PROVENANCE_V1}"
    assert refused(verdict, ProvenanceRefusal.NOT_PROVENANCE, says)
    assert not cosign.verifies_attestation(keys.release[1], image)
    assert cosign.verifies_attestation(keys.release[1], image, kind="custom")


async def test_of_several_refused_attestations_the_closest_to_a_provenance_is_reported(registry, host, binary,
                                                                                      cosign, keys):
    image = await pushed(registry, host, binary, "att-several")
    cosign.attest(keys.other[0], image, provenance())
    cosign.attest(keys.release[0], image, {"scan": "clean"}, kind="custom")
    cosign.attest(keys.release[0], image, provenance(commit="0" * 40))
    verdict = await judged(registry, image, keys.trusted("ci-release"))
    assert refused(verdict, ProvenanceRefusal.WRONG_COMMIT, "(none of its 3 attestations is accepted)")


def refused(verdict, kind: ProvenanceRefusal, says: str) -> bool:
    assert isinstance(verdict, ProvenanceRefused), verdict
    assert verdict.kind is kind and says in verdict.reason and "\n" not in verdict.reason, verdict
    return True


async def test_an_envelope_whose_payload_type_is_spelt_otherwise_is_malformed_where_cosign_takes_it(registry, host,
                                                                                                   binary, cosign,
                                                                                                   keys):
    """Go's encoding/json matches an object's keys to a struct's fields regardless of case; DSSE's is payloadType."""
    image = await pushed(registry, host, binary, "att-spelling")
    cosign.attest(keys.release[0], image, provenance())
    manifest, envelope = await first_envelope(registry, image)
    envelope["PAYLOADTYPE"] = envelope.pop("payloadType")
    await replace_first_envelope(registry, image, manifest, envelope)
    verdict = await judged(registry, image, keys.trusted("ci-release"))
    assert refused(verdict, ProvenanceRefusal.MALFORMED, "is malformed: its payloadType is none, not")
    assert cosign.verifies_attestation(keys.release[1], image)
