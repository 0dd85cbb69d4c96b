"""The hash chain, pure: each entry commits to the previous entry's hash and the event's canonical bytes."""

import hashlib
import json

GENESIS = "0" * 64


def canonical_bytes(envelope: dict) -> bytes:
    """The event as sorted, compact JSON: the same event always gives the same bytes."""
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(prev_hash: str, canonical: bytes) -> str:
    """The hash of an entry: sha256(previous hash || canonical bytes)."""
    return hashlib.sha256(prev_hash.encode() + canonical).hexdigest()


def first_broken_link(entries: list[tuple[int, str, bytes, str]]) -> int | None:
    """The seq of the first entry (seq, prev_hash, canonical, hash) that does not match its chain, or None."""
    expected_prev = GENESIS
    for seq, prev_hash, canonical, stored_hash in entries:
        if prev_hash != expected_prev or link(prev_hash, canonical) != stored_hash:
            return seq
        expected_prev = stored_hash
    return None
