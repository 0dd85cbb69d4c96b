"""The live feed: each change to an environment or to what waits at its gates, as server-sent events, for the
console's grid (docs/console.md) and anyone who follows it with `curl -N`.

Fed from Kafka: the API's one consumer without a group (services/api/outcomes.py) hands every event of the
watched topics here; `change_of` says what it changes (the same state rule as the ledger's projection,
shared/contracts/states.py), and each open stream whose filter matches gets it at once. A stream that cannot keep
up (its queue of `QUEUE_LIMIT` changes is full) is told `overflow` and closed: the client reloads the grid and
follows again, rather than the feed holding changes for it without end.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from shared.contracts.events import (DriftDetected, DriftResolved, EnvironmentPruned, Event, GateFailed, GatePassed,
                                     GatePending)
from shared.contracts.states import environment_state

QUEUE_LIMIT = 10_000
MAX_LIVE_SERVICES = 500
"""Services one stream may name (a console follows what it shows, or everything)."""
KEEPALIVE_S = 15.0


def change_of(event: Event) -> dict | None:
    """What one event changes in the grid, or None: an environment's release and state, or a release waiting at
    (or let through) an environment's gates."""
    data = event.data
    base = {"service": data.service, "env": getattr(data, "env", None), "time": event.envelope.time.isoformat(),
            "event_id": event.id, "type": event.envelope.type}
    if (state := environment_state(data)) is not None:
        return base | {"kind": "environment", "version": data.version, "digest": data.digest, "state": state}
    match data:
        case GatePending() | GateFailed():
            return base | {"kind": "waiting", "version": data.version, "digest": data.digest,
                           "outcome": "pending" if isinstance(data, GatePending) else "failed",
                           "reasons": list(data.reasons)}
        case GatePassed():
            return base | {"kind": "waiting", "version": data.version, "digest": data.digest, "outcome": "passed",
                           "reasons": []}
        case DriftDetected():
            return base | {"kind": "environment", "version": data.version, "digest": data.digest, "state": "drifted",
                           "drift": {"differences": list(data.differences), "on_drift": data.on_drift}}
        case DriftResolved():
            return base | {"kind": "drift_resolved", "version": data.version}
        case EnvironmentPruned():
            return base | {"kind": "pruned"}
    return None


@dataclass(eq=False)
class Stream:
    """One client's view of the feed: the changes for `services` (empty: every service), in order."""

    services: frozenset[str]
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    overflowed: bool = False

    def wants(self, change: dict) -> bool:
        return not self.services or change["service"] in self.services


class LiveFeed:
    """Every open stream, and the changes handed to them."""

    def __init__(self) -> None:
        self.streams: set[Stream] = set()
        self.sent = 0

    def hand(self, event: Event) -> None:
        """An event from Kafka: its change to each stream that wants it (never waits)."""
        if not self.streams:
            return
        change = change_of(event)
        if change is None:
            return
        for stream in list(self.streams):
            if not stream.wants(change) or stream.overflowed:
                continue
            try:
                stream.queue.put_nowait(change)
                self.sent += 1
            except asyncio.QueueFull:
                stream.overflowed = True
                stream.queue = asyncio.Queue(1)
                stream.queue.put_nowait(None)  # the reader's cue to say overflow and end

    async def follow(self, services: frozenset[str], keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[str]:
        """The text/event-stream of changes for `services`: `event: change` with the change as JSON, a comment
        every `keepalive_s` of quiet (proxies keep the connection), `event: overflow` before it ends."""
        stream = Stream(services)
        self.streams.add(stream)
        try:
            yield "retry: 2000\n: following\n\n"
            number = 0
            while True:
                try:
                    change = await asyncio.wait_for(stream.queue.get(), keepalive_s)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if change is None:
                    yield "event: overflow\ndata: {\"reload\": true}\n\n"
                    return
                number += 1
                yield f"id: {number}\nevent: change\ndata: {json.dumps(change, separators=(',', ':'))}\n\n"
        finally:
            self.streams.discard(stream)
