"""What every request handler of the API shares: its pools, its producer, the outcome watcher, and refusals.

A refusal is an answer and a fact: the caller gets the status and the reason in one line, and the
ledger gets an `operation.refused` event naming who tried what (docs/security.md).
"""

from dataclasses import dataclass

import asyncpg
from fastapi import HTTPException

from services.api import roles
from services.api.auth import Authenticator, Identity
from services.api.outcomes import Outcomes
from services.api.reads import LedgerReader
from shared.contracts import limits
from shared.platform.client import Publisher
from shared.contracts.events import EventData, OperationRefused, new_event
from shared.platform.settings import Settings

SOURCE = "/promote/api"


@dataclass
class Context:
    """The API process's connections (opened at startup, closed at shutdown)."""

    settings: Settings
    own: asyncpg.Pool
    """As the `api` role: its own schema (tokens)."""
    reader: asyncpg.Pool
    """As the read-only `reader` role: the ledger's projections."""
    publisher: Publisher
    outcomes: Outcomes
    authenticator: Authenticator

    async def publish(self, data: EventData) -> str:
        """Publish an event as the API (principal `api`); its id."""
        event = new_event(data, source=SOURCE)
        await self.publisher.publish(event)
        return event.id

    async def refuse(self, who: Identity | str, action: str, status: int, reason: str, *, service: str | None = None,
                     env: str | None = None, version: str | None = None) -> HTTPException:
        """Record the refusal in the ledger and return the HTTP error to raise."""
        subject = who.subject if isinstance(who, Identity) else who
        reason = _one_line(reason)
        data = OperationRefused(service=_valid(limits.check_name, service) or "unknown", who=subject[:200],
                                action=action, env=_valid(limits.check_name, env),
                                version=_valid(limits.check_version, version), status=status, reason=reason)
        await self.publish(data)
        return HTTPException(status, reason)

    async def require(self, who: Identity, role: str, action: str, env: str = roles.ANY_ENV, **where) -> None:
        """Refuse (403, recorded) unless `who` holds `role` in `env` (ANY_ENV: in every environment)."""
        if reason := roles.refusal(who.bindings, role, env):
            raise await self.refuse(who, action, 403, reason, env=None if env == roles.ANY_ENV else env, **where)

    def ledger(self, conn: asyncpg.Connection) -> LedgerReader:
        """The read side over a connection of the reader's pool."""
        return LedgerReader(conn)


def _valid(check, value: str | None) -> str | None:
    """`value` if it passes `check`, else None (a refusal still records what it can)."""
    if value is None:
        return None
    try:
        return check(value)
    except ValueError:
        return None


def _one_line(reason: str) -> str:
    """At most 1000 printable characters."""
    return "".join(c if c.isprintable() else " " for c in reason)[:1000]
