"""Signature checks on what cosign never writes: limits, malformed manifests and layers, a registry serving other
bytes, keys we do not take. An in-process fake registry (httpx.MockTransport) and signatures made here with
`cryptography`, as cosign makes them (ECDSA P-256, SHA-256, DER); the real cosign is in test_signatures.py."""

import base64
import hashlib
import json

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from shared.oci import OCI_INDEX, OCI_MANIFEST, BadImage, Registry, RegistryUnavailable, parse_reference
from shared.platform.settings import Settings
from shared.signature_keys import TrustedKey, load_keys
from shared.signatures import (MAX_PAYLOAD_BYTES, MAX_SIGNATURES, SIGNATURE_ANNOTATION, SIMPLE_SIGNING, Refusal,
                               Refused, Signed, signature_tag, verify)

HOST = "registry.test:5000"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"{HOST}/payments@{DIGEST}"
PRIVATE = ec.generate_private_key(ec.SECP256R1())
KEY = TrustedKey("ci-release", PRIVATE.public_key())


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def payload(digest: str = DIGEST) -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": f"{HOST}/payments"},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"}, "optional": None}).encode()


def sign(data: bytes) -> str:
    return base64.b64encode(PRIVATE.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


class FakeRegistry:
    """Manifests by tag and blobs by digest, in repository `payments`; `served` overrides a blob's bytes."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.served: dict[str, bytes] = {}
        self.down = False

    def signatures(self, *layers: dict, media_type: str = OCI_MANIFEST) -> None:
        self.manifests[signature_tag(DIGEST)] = json.dumps({
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(b"{}"), "size": 2},
            "layers": list(layers)}).encode()

    def layer(self, data: bytes, signature: str | None = None, **changes) -> dict:
        self.blobs[sha(data)] = data
        layer = {"mediaType": SIMPLE_SIGNING, "digest": sha(data), "size": len(data),
                 "annotations": {SIGNATURE_ANNOTATION: sign(data) if signature is None else signature}}
        return {**layer, **changes}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(503)
        kind, name = request.url.path.split("/")[-2:]
        if kind == "manifests" and name in self.manifests:
            return httpx.Response(200, content=self.manifests[name], headers={"content-type": OCI_MANIFEST})
        if kind == "blobs" and name in self.blobs:
            return httpx.Response(200, content=self.served.get(name, self.blobs[name]))
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN" if kind == "manifests"
                                                     else "BLOB_UNKNOWN"}]})


async def judged(fake: FakeRegistry, keys=(KEY,)) -> Signed | Refused:
    async with Registry(Settings(registry=HOST), transport=httpx.MockTransport(fake.handle)) as registry:
        return await verify(registry, IMAGE, list(keys))


async def test_a_signature_made_as_cosign_makes_it_verifies():
    fake = FakeRegistry()
    fake.signatures(fake.layer(payload()))
    verdict = await judged(fake)
    assert isinstance(verdict, Signed) and verdict.key_id == "ci-release"
    assert verdict.signatures == sha(fake.manifests[signature_tag(DIGEST)])


def _wrong_type(fake: FakeRegistry) -> None:
    fake.signatures(fake.layer(payload(), mediaType="application/octet-stream"))


def _too_many(fake: FakeRegistry) -> None:
    fake.signatures(*[fake.layer(payload())] * (MAX_SIGNATURES + 1))


def _too_large(fake: FakeRegistry) -> None:
    big = payload()[:-1] + b', "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    fake.signatures(fake.layer(big))


def _other_bytes(fake: FakeRegistry) -> None:
    layer = fake.layer(payload())
    fake.served[layer["digest"]] = payload("sha256:" + "cd" * 32)
    fake.signatures(layer)


def _missing_blob(fake: FakeRegistry) -> None:
    layer = fake.layer(payload())
    del fake.blobs[layer["digest"]]
    fake.signatures(layer)


def _no_annotation(fake: FakeRegistry) -> None:
    fake.signatures({**fake.layer(payload()), "annotations": {}})


def _not_json_signed(fake: FakeRegistry) -> None:
    fake.signatures(fake.layer(b"not json"))


def _an_index(fake: FakeRegistry) -> None:
    fake.signatures(media_type=OCI_INDEX)


def _not_json_manifest(fake: FakeRegistry) -> None:
    fake.manifests[signature_tag(DIGEST)] = b"{not json"


def _no_layers(fake: FakeRegistry) -> None:
    fake.signatures()


@pytest.mark.parametrize(("arrange", "kind", "says"), [
    (_wrong_type, Refusal.MALFORMED, "a layer of type 'application/octet-stream'"),
    (_too_many, Refusal.MALFORMED, f"are {MAX_SIGNATURES + 1} layers, more than {MAX_SIGNATURES}"),
    (_too_large, Refusal.MALFORMED, f"more than {MAX_PAYLOAD_BYTES}"),
    (_other_bytes, Refusal.MALFORMED, "whose digest is another"),
    (_missing_blob, Refusal.MALFORMED, "the registry does not have"),
    (_no_annotation, Refusal.MALFORMED, f"a layer without the annotation {SIGNATURE_ANNOTATION}"),
    (_not_json_signed, Refusal.MALFORMED, "by ci-release is over a payload that is not simple-signing JSON"),
    (_an_index, Refusal.MALFORMED, "are not an image manifest with layers"),
    (_not_json_manifest, Refusal.MALFORMED, "is not JSON"),
    (_no_layers, Refusal.UNSIGNED, "names no signature"),
])
async def test_what_cosign_never_writes_is_refused_with_its_reason(arrange, kind, says):
    fake = FakeRegistry()
    arrange(fake)
    verdict = await judged(fake)
    assert isinstance(verdict, Refused) and verdict.kind is kind and says in verdict.reason, verdict
    assert "\n" not in verdict.reason


async def test_a_signature_manifest_past_its_limit_is_malformed_before_it_is_read_whole():
    fake = FakeRegistry()
    fake.manifests[signature_tag(DIGEST)] = b"{" + b" " * 300_000 + b"}"
    verdict = await judged(fake)
    assert isinstance(verdict, Refused) and verdict.kind is Refusal.MALFORMED
    assert "more than the limit of 262144 (the limit for this manifest)" in verdict.reason


async def test_the_most_telling_refusal_of_several_signatures_is_reported():
    fake = FakeRegistry()
    other = payload("sha256:" + "cd" * 32)
    fake.signatures(fake.layer(payload(), signature="!!"), fake.layer(other))
    verdict = await judged(fake)
    assert isinstance(verdict, Refused) and verdict.kind is Refusal.OTHER_IMAGE, verdict
    assert verdict.reason.endswith("(none of its 2 signatures is accepted)")


async def test_a_registry_outage_is_left_to_the_caller_to_retry():
    fake = FakeRegistry()
    fake.down = True
    with pytest.raises(RegistryUnavailable):
        await judged(fake)


async def test_an_image_named_by_tag_or_no_key_at_all_is_a_mistake_of_the_caller():
    async with Registry(Settings(registry=HOST), transport=httpx.MockTransport(FakeRegistry().handle)) as registry:
        with pytest.raises(ValueError, match="names no digest"):
            await verify(registry, f"{HOST}/payments:2.4.1", [KEY])
        with pytest.raises(ValueError, match="no trusted key"):
            await verify(registry, IMAGE, [])


async def test_a_blob_is_fetched_within_its_limit_and_checked_against_its_digest():
    fake = FakeRegistry()
    data = b"x" * 100
    fake.blobs[sha(data)] = data
    ref = parse_reference(IMAGE)
    async with Registry(Settings(registry=HOST), transport=httpx.MockTransport(fake.handle)) as registry:
        assert await registry.fetch_blob(ref, sha(data), 100) == data
        with pytest.raises(BadImage, match="more than the limit of 99"):
            await registry.fetch_blob(ref, sha(data), 99)
        fake.served[sha(data)] = b"y" * 100
        with pytest.raises(BadImage, match="whose digest is another"):
            await registry.fetch_blob(ref, sha(data), 100)


def _pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("key_id", "pem", "says"), [
    ("ci release", _pem(PRIVATE), "key id 'ci release'"),
    ("ci-release", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
    ("ci-p384", _pem(ec.generate_private_key(ec.SECP384R1())), "only P-256"),
    ("ci-rsa", _pem(rsa.generate_private_key(65537, 1024)), "an RSA key of 1024 bits"),
    ("ci-dsa", _pem(dsa.generate_private_key(2048)), "ECDSA P-256 or RSA keys are taken"),
])
def test_a_key_we_do_not_take_is_refused_when_loaded(key_id, pem, says):
    with pytest.raises(ValueError, match=says):
        load_keys({key_id: pem})


def test_keys_load_by_their_ids():
    keys = load_keys({"ci-release": _pem(PRIVATE), "ci-rsa": _pem(rsa.generate_private_key(65537, 2048))})
    assert [key.key_id for key in keys] == ["ci-release", "ci-rsa"]
