"""The idempotent consumer's inbox: which events a service has handled, keyed so that no outsider can squat an id.

An event is known by (topic, service, id), not by its id alone: another producer publishing an
event under the id a future event will get can only do so on a topic it may write to (the broker's
ACLs), so it cannot make a service drop the real event from another topic. All events of one
(topic, service) sit in one partition (the key is the service), so "the first one wins" is the
same in the live service and in a replay. The inbox also keeps a digest of the event's content: a
second event with a known id but other content is refused (dead-lettered), never silently dropped.
"""

import hashlib
import json

import asyncpg

from shared.contracts.events import Event, InvalidEvent


class IdReused(InvalidEvent):
    """An event arrived under an id already handled on that topic, with other content."""


def content_digest(event: Event) -> str:
    """sha256 of what the event says (type, source, subject, data), not of when it was wrapped: a producer
    re-emitting the same event after a crash or a rebuild wraps it again with a new time."""
    envelope = event.envelope
    said = {"type": envelope.type, "source": envelope.source, "subject": envelope.subject, "data": envelope.data}
    canonical = json.dumps(said, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def identity(event: Event) -> tuple[str, str, str]:
    """(topic, service, id): the key of an event in the inbox."""
    return event.data.topic, event.data.service, event.id


async def claim(conn: asyncpg.Connection, event: Event) -> bool:
    """Record the event as handled; False if it was already, IdReused if the known one said something else."""
    digest = content_digest(event)
    claimed = await conn.fetchval(
        "insert into processed_events (topic, service, event_id, content_digest) values ($1, $2, $3, $4) "
        "on conflict do nothing returning true", *identity(event), digest)
    if claimed:
        return True
    known = await conn.fetchval(
        "select content_digest from processed_events where topic = $1 and service = $2 and event_id = $3",
        *identity(event))
    if known is not None and known != digest:
        raise IdReused(f"id reused with other content: {event.id} was handled on {event.data.topic} "
                       "with different content")
    return False


async def handled(conn: asyncpg.Connection, event: Event) -> bool:
    """Whether the event is in the inbox (without claiming it)."""
    return bool(await conn.fetchval(
        "select true from processed_events where topic = $1 and service = $2 and event_id = $3", *identity(event)))
