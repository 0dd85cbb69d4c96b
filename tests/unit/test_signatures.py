"""Key-based cosign signatures (shared/signatures.py) against the real cosign, both ways.

Every vector is made by the real cosign CLI (devstack.cosign.ensure(): built once per machine, ~6 minutes the
first time) on a private docker-registry (Debian's, distribution 2.8) started on a free loopback port without logins
(tests/cosign_support.py), signing the example image (examples/payments/build_image.py). Each case also asks
`cosign verify --key` and requires its answer to be ours: cosign verifies what we accept, and we refuse what
cosign refuses. cosign is kept off every network but the registry: its one outside call (TUF, for a trusted
root it does not need with --key) is answered by an empty --trusted-root, and a proxy on a closed loopback
port catches anything else.
"""

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from shared.oci import OCI_MANIFEST, Registry, parse_reference
from shared.signature_keys import TrustedKey
from shared.signatures import Refusal, Refused, Signed, signature_tag, verify
from tests.cosign_support import COSIGN_MARKS, binary, cosign, host, keys, pushed, registry  # noqa: F401 (fixtures)

pytestmark = COSIGN_MARKS


async def signatures_of(registry: Registry, image: str) -> dict:
    ref = parse_reference(image)
    return (await registry.resolve(ref, signature_tag(ref.digest))).content


async def replace_signatures(registry: Registry, image: str, manifest: dict) -> None:
    ref = parse_reference(image)
    await registry.push_manifest(ref, json.dumps(manifest).encode(), OCI_MANIFEST, reference=signature_tag(ref.digest))


async def test_an_image_signed_by_a_trusted_key_verifies_and_cosign_agrees(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "sig-good")
    cosign.sign(keys.release[0], image)
    verdict = await verify(registry, image, keys.trusted("ci-release", "ci-rsa"))
    assert isinstance(verdict, Signed) and verdict.key_id == "ci-release", verdict
    assert verdict.image == image and verdict.docker_reference == f"{host}/payments"
    assert cosign.verifies(keys.release[1], image)


async def test_an_rsa_key_imported_into_cosign_verifies_and_names_itself(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "sig-rsa")
    cosign.sign(keys.rsa[0], image)
    verdict = await verify(registry, image, keys.trusted("ci-release", "ci-rsa"))
    assert isinstance(verdict, Signed) and verdict.key_id == "ci-rsa", verdict
    assert cosign.verifies(keys.rsa[1], image)


async def test_one_trusted_signature_among_others_is_enough(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "sig-two")
    cosign.sign(keys.other[0], image)
    cosign.sign(keys.release[0], image)
    assert len((await signatures_of(registry, image))["layers"]) == 2
    verdict = await verify(registry, image, keys.trusted("ci-release"))
    assert isinstance(verdict, Signed) and verdict.key_id == "ci-release", verdict
    assert cosign.verifies(keys.release[1], image)


async def test_an_unsigned_image_is_refused_as_unsigned(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "sig-none")
    verdict = await verify(registry, image, keys.trusted("ci-release"))
    assert isinstance(verdict, Refused) and verdict.kind is Refusal.UNSIGNED, verdict
    assert f"has no tag {signature_tag(parse_reference(image).digest)}" in verdict.reason
    assert not cosign.verifies(keys.release[1], image)


async def test_an_image_signed_by_an_unknown_key_is_refused(registry, host, binary, cosign, keys):
    image = await pushed(registry, host, binary, "sig-unknown")
    cosign.sign(keys.other[0], image)
    verdict = await verify(registry, image, keys.trusted("ci-release", "ci-rsa"))
    assert refused(verdict, Refusal.UNTRUSTED, "verifies with no trusted key (ci-release, ci-rsa)")
    assert not cosign.verifies(keys.release[1], image) and cosign.verifies(keys.other[1], image)


async def test_the_signature_of_another_image_copied_to_this_one_is_over_another_digest(registry, host, binary,
                                                                                        cosign, keys):
    signed, target = (await pushed(registry, host, binary, "sig-copied-from"),
                      await pushed(registry, host, binary, "sig-copied-to"))
    cosign.sign(keys.release[0], signed)
    await replace_signatures(registry, target, await signatures_of(registry, signed))
    verdict = await verify(registry, target, keys.trusted("ci-release"))
    says = f"by ci-release is over another digest, {parse_reference(signed).digest}"
    assert refused(verdict, Refusal.OTHER_IMAGE, says)
    assert not cosign.verifies(keys.release[1], target)


@pytest.mark.parametrize("change", ["reference", "digest of another image"])
async def test_an_altered_payload_is_refused(registry, host, binary, cosign, keys, change):
    image = await pushed(registry, host, binary, f"sig-payload-{change.split()[0]}")
    other = await pushed(registry, host, binary, "sig-payload-other")
    cosign.sign(keys.release[0], other if change != "reference" else image)
    manifest = await signatures_of(registry, other if change != "reference" else image)
    layer = manifest["layers"][0]
    payload = json.loads(await registry.fetch_blob(parse_reference(image), layer["digest"], layer["size"]))
    if change == "reference":
        payload["critical"]["identity"]["docker-reference"] = "evil.example/payments"
    else:  # a trusted signature of `other`, its payload rewritten to name this image
        payload["critical"]["image"]["docker-manifest-digest"] = parse_reference(image).digest
    data = json.dumps(payload, separators=(",", ":")).encode()
    layer["digest"], layer["size"] = await registry.push_blob(parse_reference(image), data), len(data)
    await replace_signatures(registry, image, manifest)
    verdict = await verify(registry, image, keys.trusted("ci-release"))
    assert refused(verdict, Refusal.UNTRUSTED, "verifies with no trusted key (ci-release)")
    assert not cosign.verifies(keys.release[1], image)


@pytest.mark.parametrize(("alter", "kind", "says"), [
    ("s + 1", Refusal.UNTRUSTED, "verifies with no trusted key"),
    ("truncated", Refusal.UNTRUSTED, "has the form of no trusted key's signature"),
    ("not base64", Refusal.MALFORMED, "is malformed: its annotation is not base64"),
])
async def test_an_altered_signature_is_refused(registry, host, binary, cosign, keys, alter, kind, says):
    image = await pushed(registry, host, binary, f"sig-altered-{alter.split()[-1]}")
    cosign.sign(keys.release[0], image)
    manifest = await signatures_of(registry, image)
    annotations = manifest["layers"][0]["annotations"]
    raw = base64.b64decode(annotations["dev.cosignproject.cosign/signature"])
    if alter == "s + 1":
        r, s = decode_dss_signature(raw)
        altered = base64.b64encode(encode_dss_signature(r, s + 1)).decode()
    elif alter == "truncated":
        altered = base64.b64encode(raw[:-4]).decode()
    else:
        altered = "!" + annotations["dev.cosignproject.cosign/signature"][1:]
    annotations["dev.cosignproject.cosign/signature"] = altered
    await replace_signatures(registry, image, manifest)
    assert refused(await verify(registry, image, keys.trusted("ci-release")), kind, says)
    assert not cosign.verifies(keys.release[1], image)


async def test_a_trusted_key_signing_another_digest_through_a_payload_file_is_refused(registry, host, binary, cosign,
                                                                                      keys):
    image, other = (await pushed(registry, host, binary, "sig-payload-file"),
                    await pushed(registry, host, binary, "sig-payload-file-other"))
    payload = cosign.home / "payload.json"
    payload.write_text(json.dumps(_payload(host, parse_reference(other).digest)))
    cosign.sign(keys.release[0], image, "--payload", str(payload))
    verdict = await verify(registry, image, keys.trusted("ci-release"))
    assert refused(verdict, Refusal.OTHER_IMAGE, "by ci-release is over another digest")
    assert not cosign.verifies(keys.release[1], image)


async def test_a_trusted_payload_of_another_type_is_refused_where_cosign_takes_it(registry, host, binary, cosign, keys):
    """Stricter than cosign 2.6, on purpose: its verify does not read critical.type."""
    image = await pushed(registry, host, binary, "sig-type")
    payload = cosign.home / "typed.json"
    payload.write_text(json.dumps(_payload(host, parse_reference(image).digest, "an attestation, say")))
    cosign.sign(keys.release[0], image, "--payload", str(payload))
    verdict = await verify(registry, image, keys.trusted("ci-release"))
    assert refused(verdict, Refusal.MALFORMED, "by ci-release is of type 'an attestation, say'")
    assert cosign.verifies(keys.release[1], image)


@pytest.mark.parametrize("kind", ["ed25519", "p384"])
async def test_keys_whose_signatures_cosign_itself_refuses_are_not_taken(registry, host, binary, cosign, kind):
    """cosign 2.6 signs with an Ed25519 key as Ed25519ph and with a P-384 key over SHA-384, and verifies neither."""
    private = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP384R1())
    key, public = cosign.imported(kind, private)
    image = await pushed(registry, host, binary, f"sig-{kind}")
    cosign.sign(key, image)
    assert not cosign.verifies(public, image)
    with pytest.raises(ValueError, match=f"key ci-{kind}: "):
        TrustedKey.from_pem(f"ci-{kind}", public.read_bytes())


def refused(verdict, kind: Refusal, says: str) -> bool:
    assert isinstance(verdict, Refused), verdict
    assert verdict.kind is kind and says in verdict.reason and "\n" not in verdict.reason, verdict
    return True


def _payload(host: str, digest: str, kind: str = "cosign container image signature") -> dict:
    return {"critical": {"identity": {"docker-reference": f"{host}/payments"},
                         "image": {"docker-manifest-digest": digest}, "type": kind}, "optional": None}
