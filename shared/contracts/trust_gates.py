"""Supply-chain gates of a pipeline: who signed the artifact, and how it was built.

Written, like every gate, as one-key mappings that dump back to the same form:
``{signed_by: [ci-release]}`` (cosign's signature of exactly the promoted digest, by one of the named keys) and
``{provenance: {builder: URI, source: URI, signed_by: [ci-release]}}`` (an SLSA provenance attestation of the
digest, signed by one of the named keys — any trusted key if `signed_by` is left out —, naming that builder and
source repository, whose source commit is the build's). Key ids name public keys gates trusts (its
`trusted_keys_dir`: one `<key-id>.pub` each), never keys in the pipeline: who may change a pipeline does not
thereby choose whom to trust. What the gates decide is in ``services.gates``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_serializer, model_validator

__all__ = ["KEY_ID_PATTERN", "KeyId", "ProvenanceGate", "SignatureGate"]

KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_KEYS_PER_GATE = 16
MAX_URI_CHARS = 512
_KEY_ID = re.compile(KEY_ID_PATTERN)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s]+$")


def _key_id(value: str) -> str:
    if not _KEY_ID.match(value):
        raise ValueError(f"key id {value[:64]!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit")
    return value


def _uri(value: str) -> str:
    if len(value) > MAX_URI_CHARS or not _URI.match(value):
        raise ValueError(f"{value[:64]!r} is not a URI (scheme://…, at most {MAX_URI_CHARS} characters, no spaces)")
    return value


KeyId = Annotated[str, AfterValidator(_key_id)]
"""A trusted key's name: its file in the trusted keys directory is `<key id>.pub`."""
Uri = Annotated[str, AfterValidator(_uri)]
KeyIds = Annotated[tuple[KeyId, ...], Field(min_length=1, max_length=MAX_KEYS_PER_GATE)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SignatureGate(_Frozen):
    """Passes when the image's digest carries a cosign signature by one of the keys `signed_by` names (an image
    pipeline only)."""

    signed_by: KeyIds

    @model_validator(mode="before")
    @classmethod
    def _from_pipeline_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"signed_by"}:
            if isinstance(data["signed_by"], str):
                return {"signed_by": [data["signed_by"]]}
            if not isinstance(data["signed_by"], (list, tuple)):
                raise ValueError("a signature gate names trusted keys, e.g. {signed_by: [ci-release]}")
            if not 1 <= len(data["signed_by"]) <= MAX_KEYS_PER_GATE:
                raise ValueError(f"a signature gate names 1 to {MAX_KEYS_PER_GATE} trusted keys")
        return data

    @model_serializer
    def _to_pipeline_form(self) -> dict[str, Any]:
        return {"signed_by": list(self.signed_by)}


class ProvenanceGate(_Frozen):
    """Passes when an SLSA provenance attestation of the digest, signed by one of `keys` (any trusted key when
    none is named), names `builder` and `source` and the build's commit."""

    builder: Uri
    """The builder's id (SLSA runDetails.builder.id), compared exactly."""
    source: Uri
    """The source repository (e.g. https://github.com/acme/payments), compared exactly with the repository of
    the provenance's source dependency (its `git+` prefix and `@ref` suffix left out)."""
    signed_by: KeyIds | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_pipeline_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"provenance"}:
            if not isinstance(data["provenance"], dict):
                raise ValueError("a provenance gate is a mapping, e.g. {provenance: {builder: "
                                 "https://ci.example/builder, source: https://git.example/acme/payments}}")
            body = dict(data["provenance"])
            if isinstance(body.get("signed_by"), str):
                body["signed_by"] = [body["signed_by"]]
            return body
        return data

    @model_serializer
    def _to_pipeline_form(self) -> dict[str, Any]:
        body: dict[str, Any] = {"builder": self.builder, "source": self.source}
        if self.signed_by is not None:
            body["signed_by"] = list(self.signed_by)
        return {"provenance": body}
