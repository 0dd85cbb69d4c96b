"""Signed checkpoints of the ledger head: what an evidence bundle's entries are proven against, offline.

Every `ledger_checkpoint_interval_s`, if entries were appended, the ledger signs a statement (canonical JSON:
the number of entries, the last entry's seq and hash, and the Merkle root of every entry's hash in chain order)
with its own key (ECDSA P-256, SHA-256; setting `ledger_signing_key`, the public half in var/keys/ledger.pub)
and keeps it in `checkpoints`. The Merkle tree's frontier is kept in memory: rebuilt from the entries once at
start, then extended by the new entries only. Without a key, no checkpoint is made (and `promote prove` says so).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import structlog
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.ledger.repository import lock_chain
from shared.merkle import Frontier
from shared.platform.runtime import ServiceRuntime

log = structlog.get_logger()
STATEMENT_TYPE = "promote.ledger.checkpoint/v1"


def signing_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The ledger's private key from its PEM (ValueError if it is not an ECDSA P-256 key)."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("ledger_signing_key: an ECDSA P-256 private key (PEM) is needed")
    return key


def statement(size: int, head_seq: int, head: str, root: str, signed_at: datetime) -> bytes:
    """The signed bytes: sorted, compact JSON."""
    return json.dumps({"type": STATEMENT_TYPE, "size": size, "head_seq": head_seq, "head": head, "root": root,
                       "signed_at": signed_at.isoformat()}, sort_keys=True, separators=(",", ":")).encode()


class Checkpointer:
    """Signs a checkpoint when the ledger grew (a background step of the ledger service)."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        secret = runtime.settings.ledger_signing_key
        self.key = signing_key(secret.get_secret_value()) if secret is not None else None
        self.frontier: Frontier | None = None
        self.head_seq = 0
        self.head = ""

    async def step(self) -> float:
        interval = self.runtime.settings.ledger_checkpoint_interval_s
        if self.key is None:
            log.info("checkpoints.off", reason="no ledger_signing_key")
            return 3600.0
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            await lock_chain(conn)  # entries commit in seq order under this lock: none can appear behind us
            if self.frontier is None:
                self.frontier = Frontier()
            rows = await conn.fetch("select seq, hash from entries where seq > $1 order by seq", self.head_seq)
            if not rows:
                return interval
            for row in rows:
                self.frontier.append(bytes.fromhex(row["hash"]))
            self.head_seq, self.head = rows[-1]["seq"], rows[-1]["hash"]
            signed_at = datetime.now(UTC)
            body = statement(self.frontier.size, self.head_seq, self.head, self.frontier.root().hex(), signed_at)
            signature = base64.b64encode(self.key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
            await conn.execute(
                "insert into checkpoints (size, head_seq, head, root, signed_at, statement, signature) "
                "values ($1, $2, $3, $4, $5, $6, $7) on conflict (size) do nothing",
                self.frontier.size, self.head_seq, self.head, self.frontier.root().hex(), signed_at, body, signature)
        log.info("checkpoint.signed", size=self.frontier.size, head_seq=self.head_seq)
        return interval
