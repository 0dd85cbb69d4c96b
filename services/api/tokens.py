"""API tokens: `pmt_<id>_<secret>`, shown once when created; the database keeps the id and a hash of the secret.

The secret is 32 random bytes, so a plain SHA-256 is enough (nothing to brute-force, unlike a
password); the check compares hashes in constant time. A token names its subject, its role
bindings and groups, who created it, an optional expiry, and whether it was revoked.
"""

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

PREFIX = "pmt_"


@dataclass(frozen=True)
class TokenRecord:
    """A token as stored (never its secret)."""

    id: str
    subject: str
    bindings: tuple[str, ...]
    groups: tuple[str, ...]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def to_json(self) -> dict:
        """For `promote token list --json` (no secret: it is not kept)."""
        return {"id": self.id, "subject": self.subject, "roles": list(self.bindings), "groups": list(self.groups),
                "created_by": self.created_by, "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def new_token() -> tuple[str, str, str]:
    """(token, id, sha256 of its secret): the token is shown once, the rest is stored."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return f"{PREFIX}{token_id}_{secret}", token_id, _digest(secret)


def split(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed API token, else None."""
    if not token.startswith(PREFIX):
        return None
    token_id, _, secret = token[len(PREFIX):].partition("_")
    if len(token_id) != 12 or not secret or len(secret) > 100:
        return None
    return token_id, secret


def matches(secret: str, stored_sha256: str) -> bool:
    """Whether `secret` hashes to the stored digest (constant time)."""
    return hmac.compare_digest(_digest(secret), stored_sha256)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def insert(conn: asyncpg.Connection, token_id: str, secret_sha256: str, subject: str, bindings: list[str],
                 groups: list[str], created_by: str, expires_at: datetime | None) -> None:
    """Store a new token."""
    await conn.execute(
        "insert into api.tokens (id, subject, bindings, groups, secret_sha256, created_by, expires_at) "
        "values ($1, $2, $3, $4, $5, $6, $7)",
        token_id, subject, json.dumps(bindings), json.dumps(groups), secret_sha256, created_by, expires_at)


async def find(conn: asyncpg.Connection, token_id: str) -> tuple[TokenRecord, str] | None:
    """The token with this id and its stored secret hash."""
    row = await conn.fetchrow("select * from api.tokens where id = $1", token_id)
    return (_record(row), row["secret_sha256"]) if row else None


async def listed(conn: asyncpg.Connection) -> list[TokenRecord]:
    """Every token, newest first."""
    return [_record(row) for row in await conn.fetch("select * from api.tokens order by created_at desc")]


async def revoke(conn: asyncpg.Connection, token_id: str) -> bool:
    """Revoke a token; False if there is none with this id (or it was revoked before)."""
    done = await conn.fetchval("update api.tokens set revoked_at = now() where id = $1 and revoked_at is null "
                               "returning true", token_id)
    return bool(done)


def _record(row: asyncpg.Record) -> TokenRecord:
    return TokenRecord(row["id"], row["subject"], tuple(json.loads(row["bindings"])), tuple(json.loads(row["groups"])),
                       row["created_by"], row["created_at"], row["expires_at"], row["revoked_at"])
