"""Trusted public keys for signature checks: a PEM public key under our name for it (its key id).

The kinds whose signatures `cosign sign --key` makes and `cosign verify --key` accepts (cosign 2.6): ECDSA
P-256 with SHA-256 (what `cosign generate-key-pair` makes) and RSA of 2048 bits or more (PKCS#1 v1.5,
SHA-256). Not Ed25519 nor other curves: cosign 2.6 signs with an Ed25519 key as Ed25519ph and with a P-384
key over SHA-384, and its own verify refuses both (it checks pure Ed25519 and SHA-256). Any other kind is
refused when the key is loaded, so a configuration naming one fails at once rather than at the first gate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from shared.contracts.trust_gates import KEY_ID_PATTERN

KEY_ID = re.compile(KEY_ID_PATTERN)
MIN_RSA_BITS = 2048
MAX_PEM_CHARS = 16 * 1024

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@dataclass(frozen=True)
class TrustedKey:
    """A public key a signature may be made with, and our name for it."""

    key_id: str
    public_key: PublicKey

    @classmethod
    def from_pem(cls, key_id: str, pem: str | bytes) -> "TrustedKey":
        """The key in a PEM `PUBLIC KEY` block (cosign.pub); ValueError naming the key id if it is not one we take."""
        if not KEY_ID.match(key_id):
            raise ValueError(f"key id {key_id[:80]!r}: 1-64 letters, digits, '.', '_', '-'")
        data = pem.encode() if isinstance(pem, str) else pem
        if len(data) > MAX_PEM_CHARS:
            raise ValueError(f"key {key_id}: a PEM public key has at most {MAX_PEM_CHARS} characters")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError(f"key {key_id}: not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
        if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"key {key_id}: an ECDSA key on {key.curve.name}; only P-256 (secp256r1) is taken")
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            raise ValueError(f"key {key_id}: an RSA key of {key.key_size} bits, fewer than {MIN_RSA_BITS}")
        if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise ValueError(f"key {key_id}: a {type(key).__name__}; ECDSA P-256 or RSA keys are taken (cosign 2.6 "
                             "does not verify the Ed25519 signatures it makes)")
        return cls(key_id, key)

    def fits(self, signature: bytes) -> bool:
        """Whether `signature` has the form of this kind of key's signatures (ASN.1 DER for ECDSA, the key's size
        for RSA)."""
        if isinstance(self.public_key, ec.EllipticCurvePublicKey):
            try:
                decode_dss_signature(signature)
            except ValueError:
                return False
            return True
        return len(signature) == (self.public_key.key_size + 7) // 8

    def verifies(self, signature: bytes, payload: bytes) -> bool:
        """Whether `signature` is this key's signature over exactly `payload`."""
        try:
            if isinstance(self.public_key, ec.EllipticCurvePublicKey):
                self.public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            else:
                self.public_key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def load_keys(pems: Mapping[str, str | bytes]) -> tuple[TrustedKey, ...]:
    """Trusted keys from {key id: PEM}, as configuration names them (ValueError naming the first bad one)."""
    return tuple(TrustedKey.from_pem(key_id, pem) for key_id, pem in pems.items())
