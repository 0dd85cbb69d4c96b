"""Images in an OCI registry, through the distribution API (v2): resolve a reference, check an image, push one.

A reference names its registry explicitly (`registry/repository:tag` or `…@sha256:<hex>`): there is no
default registry, so a name can never silently mean Docker Hub. The stack's registry (and any listed
in settings.insecure_registries) is spoken to over plain HTTP; every other one over HTTPS.

Resolving reads the manifest (OCI or Docker v2, image or index) within a size limit and takes its
digest from its bytes: a registry's Docker-Content-Digest header that disagrees is an error, and so
is a reference by digest whose bytes hash to something else. Checking an image resolves it and asks
for every blob its manifest names (HEAD), with the sizes the manifest states; an index is checked
through each of its manifests. Logins are HTTP basic, or the bearer token a registry's challenge
asks for (fetched with the same login), as distribution and the big registries do.

Errors say what holds: ImageUnknown (no such repository, tag or digest), RegistryDenied (the login
was refused), BadImage (malformed, too large, a blob missing), RegistryUnavailable (connection,
timeout, 5xx, 429: a ConnectionError, so consumers back off and retry it as an outage).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import httpx

from shared.platform.settings import Settings

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((*MANIFESTS, *INDEXES))
MAX_BLOBS = 128
"""Layers (plus the config) one manifest may name."""
MAX_CHILDREN = 64
"""Manifests one index may name."""
MAX_REFERENCE_CHARS = 512

_DOMAIN = r"(?:localhost|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]{1,5})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"^(?P<registry>{_DOMAIN})/(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
                        r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryError(Exception):
    """A registry answered, and what it answered means the image cannot be used (the message says why)."""


class ImageUnknown(RegistryError):
    """No such repository, tag or digest in the registry."""


class RegistryDenied(RegistryError):
    """The registry refused the login (or its absence)."""


class BadImage(RegistryError):
    """The manifest is malformed or too large, names too much, or a blob it names is missing."""


class ImageMismatch(RegistryError):
    """The reference resolves to another digest than the one expected."""


class RegistryUnavailable(ConnectionError):
    """The registry could not be reached or answered that it cannot serve now (5xx, 429): try again later."""


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference; `tag` and `digest` may both be given (the digest then decides)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """registry/repository."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the manifest is asked for by: the digest if given, else the tag."""
        return self.digest or self.tag or "latest"

    def at(self, digest: str) -> str:
        """registry/repository@digest: the image as every later step names it."""
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str) -> ImageReference:
    """`registry/repository[:tag][@sha256:…]` (ValueError with the reason otherwise)."""
    if len(text) > MAX_REFERENCE_CHARS:
        raise ValueError(f"an image reference has at most {MAX_REFERENCE_CHARS} characters")
    found = _REFERENCE.match(text)
    if found is None:
        first = text.split("/", 1)[0]
        if "/" not in text or not ("." in first or ":" in first or first == "localhost"):
            raise ValueError(f"image reference {text[:80]!r} names no registry (expected registry/repository:tag, "
                             "e.g. 127.0.0.1:18500/payments:2.4.1)")
        raise ValueError(f"image reference {text[:80]!r} is not registry/repository[:tag][@sha256:<64 hex>] "
                         "(repository: lowercase letters, digits, '.', '_', '-', '/')")
    if not found["tag"] and not found["digest"]:
        raise ValueError(f"image reference {text[:80]!r} names neither a tag nor a digest")
    if len(found["repository"]) > 255:
        raise ValueError("an image repository name has at most 255 characters")
    return ImageReference(found["registry"], found["repository"], found["tag"], found["digest"])


@dataclass(frozen=True)
class Resolved:
    """A manifest as the registry served it: its digest (of its bytes), media type, and parsed content."""

    reference: ImageReference
    digest: str
    media_type: str
    raw: bytes
    content: dict = field(repr=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEXES


@dataclass(frozen=True)
class Checked:
    """An image whose manifest and every blob exist: its digest and the total size its manifests state."""

    digest: str
    media_type: str
    size: int
    location: str
    """registry/repository@digest."""


class Registry:
    """A client of the registries an image reference names, logging in as one user."""

    def __init__(self, settings: Settings, username: str | None = None, password: str | None = None, *,
                 timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.insecure = set(settings.insecure_registries)
        self.max_manifest_bytes = settings.image_max_manifest_bytes
        self.max_image_bytes = settings.image_max_bytes
        self.username = username
        self._auth = httpx.BasicAuth(username, password) if username and password else None
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=True)
        self._tokens: dict[tuple[str, str], str] = {}

    @classmethod
    def from_settings(cls, settings: Settings, user: str | None = None) -> "Registry":
        """Logged in as settings' registry user, or as `user` with its password from var/credentials/registry."""
        from shared.platform.credentials import registry_login

        username, password = registry_login(settings, user)
        return cls(settings, username, password)

    async def __aenter__(self) -> "Registry":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def base(self, registry: str) -> str:
        return f"{'http' if registry in self.insecure else 'https'}://{registry}"

    async def resolve(self, ref: ImageReference, reference: str | None = None, *,
                      max_bytes: int | None = None) -> Resolved:
        """The manifest `ref` names (or `reference`, a digest or tag in the same repository), within
        `max_bytes` (default: image_max_manifest_bytes)."""
        asked = reference or ref.reference
        limit = self.max_manifest_bytes if max_bytes is None else max_bytes
        setting = "image_max_manifest_bytes" if max_bytes is None else "the limit for this manifest"
        url = f"{self.base(ref.registry)}/v2/{ref.repository}/manifests/{asked}"
        async with await self._stream(ref, "GET", url, {"Accept": ACCEPT}) as answer:
            if answer.status_code != 200:
                self._raise_for(answer, ref, asked, body=await _bounded(answer, 64 * 1024))
            raw = await _read_within(answer, limit, f"the manifest of {ref.name}:{asked}", setting)
            header_digest = answer.headers.get("docker-content-digest")
            content_type = answer.headers.get("content-type", "").split(";")[0].strip()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if DIGEST.match(asked) and digest != asked:
            raise BadImage(f"the registry served bytes for {ref.name}@{asked} whose digest is another")
        if header_digest is not None and header_digest != digest:
            raise BadImage(f"the registry's Docker-Content-Digest for {ref.name}:{asked} is not the digest of the "
                           "bytes it served")
        try:
            content = json.loads(raw)
        except ValueError:
            raise BadImage(f"the manifest of {ref.name}:{asked} is not JSON") from None
        if not isinstance(content, dict) or content.get("schemaVersion") != 2:
            raise BadImage(f"the manifest of {ref.name}:{asked} is not an image manifest (schemaVersion 2)")
        media_type = content.get("mediaType") or content_type
        if media_type not in (*MANIFESTS, *INDEXES):
            raise BadImage(f"the manifest of {ref.name}:{asked} has media type {str(media_type)[:80]!r}, not an "
                           "OCI or Docker v2 image manifest or index")
        return Resolved(ref, digest, media_type, raw, content)

    async def check(self, ref: ImageReference, expected: str | None = None) -> Checked:
        """Resolve `ref` (ImageMismatch unless its digest is `expected`, when given) and make sure every blob it
        names exists with its stated size, within the limits."""
        resolved = await self.resolve(ref)
        if expected is not None and resolved.digest != expected:
            raise ImageMismatch(f"the image {ref} resolves to other bytes than the build's digest")
        if resolved.is_index:
            children = _descriptors(resolved, "manifests", MAX_CHILDREN)
            size = 0
            for child in children:
                if child["mediaType"] not in MANIFESTS:
                    raise BadImage(f"the index {ref.at(resolved.digest)} names a {child['mediaType']!r}, not an image "
                                   "manifest")
                size += await self._check_manifest(await self.resolve(ref, child["digest"]))
                self._within_limit(ref, size)
        else:
            size = await self._check_manifest(resolved)
        return Checked(resolved.digest, resolved.media_type, size, ref.at(resolved.digest))

    async def digest_of(self, ref: ImageReference) -> str:
        """The digest the registry gives for `ref` now (HEAD; GET when it sends no digest header)."""
        url = f"{self.base(ref.registry)}/v2/{ref.repository}/manifests/{ref.reference}"
        answer = await self._send(ref, "HEAD", url, {"Accept": ACCEPT})
        self._raise_for(answer, ref, ref.reference)
        found = answer.headers.get("docker-content-digest")
        if found and DIGEST.match(found):
            return found
        return (await self.resolve(ref)).digest

    async def fetch_blob(self, ref: ImageReference, digest: str, max_bytes: int) -> bytes:
        """The bytes of blob `digest` in ref's repository, at most `max_bytes`, checked against the digest
        (ImageUnknown if the registry has no such blob; BadImage if it is too large or has other bytes)."""
        if not DIGEST.match(digest):
            raise BadImage(f"{digest[:80]!r} is not a sha256 digest")
        url = f"{self.base(ref.registry)}/v2/{ref.repository}/blobs/{digest}"
        async with await self._stream(ref, "GET", url, {}) as answer:
            if answer.status_code != 200:
                self._raise_for(answer, ref, digest, body=await _bounded(answer, 64 * 1024))
            data = await _read_within(answer, max_bytes, f"blob {digest} of {ref.name}", "the limit for this blob")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise BadImage(f"the registry served bytes for blob {digest} of {ref.name} whose digest is another")
        return data

    async def _check_manifest(self, manifest: Resolved) -> int:
        """HEAD the config and each layer; the total size the manifest states."""
        ref = manifest.reference
        config = manifest.content.get("config")
        blobs = [config] if isinstance(config, dict) else []
        if not blobs:
            raise BadImage(f"the manifest {ref.at(manifest.digest)} names no config")
        blobs += _descriptors(manifest, "layers", MAX_BLOBS - 1)
        for blob in blobs:
            _descriptor(manifest, blob)
        size = sum(blob["size"] for blob in blobs)
        self._within_limit(ref, size)
        for blob in blobs:
            url = f"{self.base(ref.registry)}/v2/{ref.repository}/blobs/{blob['digest']}"
            answer = await self._send(ref, "HEAD", url, {})
            if answer.status_code == 404:
                raise BadImage(f"the image {ref.at(manifest.digest)} names blob {blob['digest']}, which the registry "
                               "does not have")
            self._raise_for(answer, ref, blob["digest"])
            length = answer.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) != blob["size"]:
                raise BadImage(f"blob {blob['digest']} of {ref.at(manifest.digest)} has {length} bytes, not the "
                               f"{blob['size']} its manifest states")
        return size

    def _within_limit(self, ref: ImageReference, size: int) -> None:
        if size > self.max_image_bytes:
            raise BadImage(f"the image {ref.name} states {size} bytes, more than the limit of {self.max_image_bytes} "
                           "(image_max_bytes)")

    async def push_blob(self, ref: ImageReference, data: bytes) -> str:
        """Upload one blob (monolithic: POST, then PUT with its digest) unless the registry has it; its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        base = f"{self.base(ref.registry)}/v2/{ref.repository}/blobs"
        answer = await self._send(ref, "HEAD", f"{base}/{digest}", {}, push=True)
        if answer.status_code == 200:
            return digest
        started = await self._send(ref, "POST", f"{base}/uploads/", {}, push=True)
        self._raise_for(started, ref, "upload", expected=202)
        location = httpx.URL(self.base(ref.registry)).join(started.headers["location"])
        done = await self._send(ref, "PUT", str(location.copy_merge_params({"digest": digest})),
                                {"Content-Type": "application/octet-stream"}, push=True, content=data)
        self._raise_for(done, ref, digest, expected=201)
        return digest

    async def push_manifest(self, ref: ImageReference, raw: bytes, media_type: str, reference: str | None = None) -> str:
        """PUT a manifest under a tag (or its digest); its digest."""
        asked = reference or ref.reference
        url = f"{self.base(ref.registry)}/v2/{ref.repository}/manifests/{asked}"
        answer = await self._send(ref, "PUT", url, {"Content-Type": media_type}, push=True, content=raw)
        self._raise_for(answer, ref, asked, expected=201)
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    async def _send(self, ref: ImageReference, method: str, url: str, headers: dict, *, push: bool = False,
                    content: bytes | None = None, stream: bool = False) -> httpx.Response:
        """One request, sent again once with a token when the registry answers with a bearer challenge;
        `stream`: the body is left to read (and the response to close) by the caller."""
        try:
            answer = await self._client.send(self._request(ref, method, url, headers, push, content), stream=stream)
            if answer.status_code == 401 and await self._token_for(ref, answer, push):
                await answer.aclose()
                answer = await self._client.send(self._request(ref, method, url, headers, push, content),
                                                 stream=stream)
            return answer
        except httpx.TransportError as error:
            raise RegistryUnavailable(f"registry {ref.registry} unreachable: {type(error).__name__}: {error}") \
                from None

    async def _stream(self, ref: ImageReference, method: str, url: str, headers: dict) -> "_Closing":
        """A streamed request (the body read within the limit), closed when the `async with` ends."""
        return _Closing(await self._send(ref, method, url, headers, stream=True))

    def _request(self, ref: ImageReference, method: str, url: str, headers: dict, push: bool,
                 content: bytes | None) -> httpx.Request:
        request = self._client.build_request(method, url, headers=headers, content=content)
        token = self._tokens.get((ref.name, _scope(ref, push)))
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        elif self._auth is not None:
            request = next(self._auth.auth_flow(request))
        return request

    async def _token_for(self, ref: ImageReference, challenged: httpx.Response, push: bool) -> bool:
        """Fetch the bearer token a `WWW-Authenticate: Bearer realm=…` challenge asks for; False if none is asked."""
        challenge = challenged.headers.get("www-authenticate", "")
        if not challenge.lower().startswith("bearer ") or (ref.name, _scope(ref, push)) in self._tokens:
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in fields:
            return False
        params = {"service": fields.get("service", ""), "scope": _scope(ref, push)}
        try:
            answer = await self._client.get(fields["realm"], params=params, auth=self._auth or httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as error:
            raise RegistryUnavailable(f"token service of {ref.registry} unreachable: {error}") from None
        if answer.status_code != 200:
            return False
        body = answer.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            return False
        self._tokens[(ref.name, _scope(ref, push))] = token
        return True

    def _raise_for(self, answer: httpx.Response, ref: ImageReference, asked: str, expected: int = 200,
                   body: bytes | None = None) -> None:
        """RegistryError or RegistryUnavailable for an answer that is not `expected` (`body`: of a streamed one)."""
        status = answer.status_code
        if status == expected:
            return
        code = _error_code(answer.content if body is None else body)
        what = f"{ref.name}:{asked}" if not DIGEST.match(asked) else f"{ref.name}@{asked}"
        if status in (401, 403):
            who = f"the login of {self.username!r}" if self.username else "an anonymous request"
            raise RegistryDenied(f"registry {ref.registry} refused {who} for {ref.name} ({status}{code})")
        if status == 404:
            raise ImageUnknown(f"unknown repository or tag: {what} ({status}{code})")
        if status == 429 or status >= 500:
            raise RegistryUnavailable(f"registry {ref.registry} answered {status}{code} for {what}")
        raise RegistryError(f"registry {ref.registry} answered {status}{code} for {what}")


class _Closing:
    """`async with` over a streamed response: closed on the way out."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    async def __aenter__(self) -> httpx.Response:
        return self.response

    async def __aexit__(self, *exc) -> None:
        await self.response.aclose()


def _scope(ref: ImageReference, push: bool) -> str:
    return f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"


def _error_code(body: bytes) -> str:
    """`: CODE` of a distribution error body ({"errors": [{"code": …}]}), or nothing."""
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        return ""
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict) and isinstance(errors[0].get("code"), str):
        return f": {errors[0]['code'][:64]}"
    return ""


async def _bounded(answer: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of a streamed answer's body (an error body a hostile registry cannot make huge)."""
    body = b""
    async for chunk in answer.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit]


async def _read_within(answer: httpx.Response, limit: int, what: str, setting: str) -> bytes:
    """The body of a streamed answer; BadImage if it states or streams more than `limit` bytes."""
    declared = answer.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadImage(f"{what} has {declared} bytes, more than the limit of {limit} ({setting})")
    body = b""
    async for chunk in answer.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise BadImage(f"{what} is larger than the limit of {limit} bytes ({setting})")
    return body


def _descriptors(manifest: Resolved, key: str, limit: int) -> list[dict]:
    """The descriptor list `key` of a manifest, each checked, at most `limit`."""
    found = manifest.content.get(key)
    if not isinstance(found, list) or (key == "manifests" and not found):
        raise BadImage(f"the manifest {manifest.reference.at(manifest.digest)} has no {key} list")
    if len(found) > limit:
        raise BadImage(f"the manifest {manifest.reference.at(manifest.digest)} names {len(found)} {key}, more than "
                       f"{limit}")
    return [_descriptor(manifest, item) for item in found]


def _descriptor(manifest: Resolved, item: object) -> dict:
    """A descriptor with a sha256 digest, a non-negative integer size and a media type."""
    if not (isinstance(item, dict) and isinstance(item.get("digest"), str) and DIGEST.match(item["digest"])
            and type(item.get("size")) is int and item["size"] >= 0 and isinstance(item.get("mediaType"), str)):
        raise BadImage(f"the manifest {manifest.reference.at(manifest.digest)} has a descriptor without a sha256 "
                       "digest, a size and a media type")
    return item


def image_manifest(config: bytes, layers: list[tuple[bytes, str]], media_type: str = OCI_MANIFEST,
                   config_type: str = "application/vnd.oci.image.config.v1+json") -> bytes:
    """The canonical bytes of an image manifest for these config and (blob, media type) layers."""
    def describe(data: bytes, kind: str) -> dict:
        return {"mediaType": kind, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}

    manifest = {"schemaVersion": 2, "mediaType": media_type, "config": describe(config, config_type),
                "layers": [describe(data, kind) for data, kind in layers]}
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
