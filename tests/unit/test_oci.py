"""The registry client against an in-process fake registry (httpx.MockTransport): references, digests from
bytes, limits, missing blobs, logins and token challenges, outages. The real registry is in tests/e2e/test_images.py."""

import hashlib
import json

import httpx
import pytest

from shared.oci import (DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, BadImage, ImageMismatch, ImageUnknown, Registry,
                        RegistryDenied, RegistryUnavailable, image_manifest, parse_reference)
from shared.platform.settings import Settings

HOST = "registry.test:5000"
CONFIG, LAYER = b'{"architecture":"amd64","os":"linux"}', b"layer bytes"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    """Manifests by (repository, reference), blobs by digest, and a password (or a bearer token service)."""

    def __init__(self, *, password: str = "pw", bearer: bool = False) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.password, self.bearer = password, bearer
        self.down = False
        self.lie_about_digest = False
        self.requests: list[str] = []

    def image(self, repository: str, tag: str, media_type: str = OCI_MANIFEST) -> str:
        raw = image_manifest(CONFIG, [(LAYER, "application/vnd.oci.image.layer.v1.tar")], media_type)
        self.blobs[sha(CONFIG)], self.blobs[sha(LAYER)] = CONFIG, LAYER
        self.manifests[(repository, tag)] = self.manifests[(repository, sha(raw))] = (raw, media_type)
        return sha(raw)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if self.down:
            return httpx.Response(503)
        if request.url.path == "/token":
            if request.headers.get("authorization") != httpx.BasicAuth("intake", self.password)._auth_header:
                return httpx.Response(401)
            return httpx.Response(200, json={"token": "t0k"})
        expected = "Bearer t0k" if self.bearer else httpx.BasicAuth("intake", self.password)._auth_header
        if request.headers.get("authorization") != expected:
            challenge = (f'Bearer realm="http://{HOST}/token",service="fake"' if self.bearer
                         else 'Basic realm="fake"')
            return httpx.Response(401, headers={"www-authenticate": challenge},
                                  json={"errors": [{"code": "UNAUTHORIZED"}]})
        parts = request.url.path.split("/")
        if "manifests" in parts:
            at = parts.index("manifests")
            found = self.manifests.get(("/".join(parts[2:at]), parts[at + 1]))
            if found is None:
                return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            raw, media_type = found
            digest = sha(b"other") if self.lie_about_digest else sha(raw)
            return httpx.Response(200, content=raw if request.method == "GET" else b"",
                                  headers={"content-type": media_type, "docker-content-digest": digest})
        if "blobs" in parts:
            blob = self.blobs.get(parts[-1])
            if blob is None:
                return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
            return httpx.Response(200, headers={"content-length": str(len(blob))})
        return httpx.Response(404)


def client(fake: FakeRegistry, password: str = "pw", **settings) -> Registry:
    config = Settings(registry=HOST, **settings)
    return Registry(config, "intake", password, transport=httpx.MockTransport(fake.handle))


@pytest.mark.parametrize(("text", "says"), [
    ("payments:2.4.1", "names no registry"),
    ("registry.test:5000/Payments:1", "is not registry/repository"),
    ("registry.test:5000/payments", "names neither a tag nor a digest"),
    ("registry.test:5000/payments@sha256:abc", "is not registry/repository"),
    ("registry.test:5000/../etc:1", "is not registry/repository"),
    ("registry.test:5000/p:" + "t" * 129, "is not registry/repository"),
    ("r.test/" + "a" * 600 + ":1", "at most 512 characters"),
])
def test_a_bad_image_reference_is_refused_with_its_reason(text, says):
    with pytest.raises(ValueError, match=says):
        parse_reference(text)


def test_a_reference_keeps_its_registry_repository_tag_and_digest():
    ref = parse_reference(f"{HOST}/team/payments:2.4.1@{sha(b'x')}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (HOST, "team/payments", "2.4.1", sha(b"x"))
    assert ref.reference == sha(b"x") and ref.at(sha(b"y")) == f"{HOST}/team/payments@{sha(b'y')}"


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
async def test_an_image_is_checked_by_the_digest_of_its_manifest_bytes_and_every_blob(media_type):
    fake = FakeRegistry()
    digest = fake.image("payments", "2.4.1", media_type)
    async with client(fake) as registry:
        checked = await registry.check(parse_reference(f"{HOST}/payments:2.4.1"), expected=digest)
    assert (checked.digest, checked.location, checked.size) == (digest, f"{HOST}/payments@{digest}",
                                                                len(CONFIG) + len(LAYER))
    assert f"HEAD /v2/payments/blobs/{sha(LAYER)}" in fake.requests


async def test_an_image_of_other_bytes_is_a_mismatch_that_names_no_digest():
    fake = FakeRegistry()
    fake.image("payments", "2.4.1")
    async with client(fake) as registry:
        with pytest.raises(ImageMismatch) as raised:
            await registry.check(parse_reference(f"{HOST}/payments:2.4.1"), expected=sha(b"claimed"))
    assert "sha256:" not in str(raised.value)


async def test_a_registry_whose_digest_header_disagrees_with_its_bytes_is_not_believed():
    fake = FakeRegistry()
    fake.image("payments", "2.4.1")
    fake.lie_about_digest = True
    async with client(fake) as registry:
        with pytest.raises(BadImage, match="Docker-Content-Digest .* is not the digest of the bytes"):
            await registry.resolve(parse_reference(f"{HOST}/payments:2.4.1"))


async def test_unknown_tags_wrong_logins_missing_blobs_and_outages_each_say_what_holds():
    fake = FakeRegistry()
    digest = fake.image("payments", "2.4.1")
    ref = parse_reference(f"{HOST}/payments:2.4.1")
    async with client(fake) as registry:
        with pytest.raises(ImageUnknown, match=r"unknown repository or tag: registry.test:5000/payments:9.9 \(404: "
                                               r"MANIFEST_UNKNOWN\)"):
            await registry.check(parse_reference(f"{HOST}/payments:9.9"))
        del fake.blobs[sha(LAYER)]
        with pytest.raises(BadImage, match=f"names blob {sha(LAYER)}, which the registry does not have"):
            await registry.check(ref, expected=digest)
        fake.down = True
        with pytest.raises(RegistryUnavailable, match="answered 503"):
            await registry.check(ref)
    async with client(fake, password="wrong") as registry:
        fake.down = False
        with pytest.raises(RegistryDenied, match=r"refused the login of 'intake' for registry.test:5000/payments "
                                                 r"\(401: UNAUTHORIZED\)"):
            await registry.check(ref)


async def test_an_unreachable_registry_is_an_outage_to_wait_out():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    registry = Registry(Settings(registry=HOST), "intake", "pw", transport=httpx.MockTransport(refuse))
    with pytest.raises(RegistryUnavailable) as raised:
        await registry.check(parse_reference(f"{HOST}/payments:1"))
    assert isinstance(raised.value, OSError)  # consumers retry OSErrors as outages, never dead-letter them
    await registry.aclose()


async def test_a_bearer_challenge_is_answered_with_a_token_fetched_with_the_login():
    fake = FakeRegistry(bearer=True)
    digest = fake.image("payments", "2.4.1")
    async with client(fake) as registry:
        assert (await registry.check(parse_reference(f"{HOST}/payments:2.4.1"))).digest == digest
    assert "GET /token" in fake.requests


async def test_an_index_is_kept_by_its_own_digest_and_checked_through_each_manifest():
    fake = FakeRegistry()
    child = fake.image("payments", "amd64")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child, "size": 10, "platform": {"os": "linux"}}]}).encode()
    fake.manifests[("payments", "2.4.1")] = (index, OCI_INDEX)
    async with client(fake) as registry:
        checked = await registry.check(parse_reference(f"{HOST}/payments:2.4.1"), expected=sha(index))
    assert checked.digest == sha(index) and checked.media_type == OCI_INDEX


async def test_a_manifest_past_the_size_limit_or_stating_too_large_an_image_is_refused():
    fake = FakeRegistry()
    digest = fake.image("payments", "2.4.1")
    async with client(fake, image_max_manifest_bytes=1024, image_max_bytes=10) as registry:
        with pytest.raises(BadImage, match=r"states \d+ bytes, more than the limit of 10 \(image_max_bytes\)"):
            await registry.check(parse_reference(f"{HOST}/payments@{digest}"))
    fake.manifests[("payments", "big")] = (b"{" + b" " * 2000 + b"}", OCI_MANIFEST)
    async with client(fake, image_max_manifest_bytes=1024) as registry:
        with pytest.raises(BadImage, match=r"has 2002 bytes, more than the limit of 1024 \(image_max_manifest_bytes\)"):
            await registry.resolve(parse_reference(f"{HOST}/payments:big"))


async def test_a_manifest_streamed_without_a_length_is_refused_past_the_limit():

    def endless(request: httpx.Request) -> httpx.Response:
        async def chunks():
            for _ in range(10_000):
                yield b" " * 1024
        return httpx.Response(200, content=chunks(), headers={"content-type": OCI_MANIFEST})

    async with Registry(Settings(registry=HOST, image_max_manifest_bytes=4096), "intake", "pw",
                        transport=httpx.MockTransport(endless)) as registry:
        with pytest.raises(BadImage, match="larger than the limit of 4096 bytes"):
            await registry.resolve(parse_reference(f"{HOST}/payments:endless"))
