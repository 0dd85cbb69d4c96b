"""Transactional outbox: events are written in the handler's transaction, then relayed to Kafka."""

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import asyncpg
import structlog
from aiokafka.errors import InvalidProducerEpoch, OutOfOrderSequenceNumber, ProducerClosed, ProducerFenced, \
    UnknownProducerId

from shared.platform import metrics
from shared.platform.backoff import Backoff
from shared.contracts.events import Event

log = structlog.get_logger()

Send = Callable[[str, bytes, bytes], Awaitable[asyncio.Future]]
"""Hands one record to the producer and returns the future of its acknowledgement."""

STUCK_PRODUCER_ERRORS = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced,
                         ProducerClosed)
"""Errors after which an idempotent producer never sends again (seen: OutOfOrderSequenceNumber on every send once
a broker restarted with batches in flight): the relay takes a new producer, whose sequence numbers start afresh.
What the old one may have written is written again, under the same event ids, which consumers ignore."""


async def enqueue(conn: asyncpg.Connection, events: Iterable[Event]) -> None:
    """Add events to the outbox inside the caller's transaction (a repeated id is a no-op)."""
    rows = [(e.id, e.data.topic, e.data.service, e.to_bytes()) for e in events]
    if rows:
        await conn.executemany(
            "insert into outbox (event_id, topic, key, payload) values ($1, $2, $3, $4) "
            "on conflict (event_id) do nothing",
            rows,
        )


class OutboxRelay:
    """Publishes committed outbox rows in order, at least once, and marks them published."""

    def __init__(self, pool: asyncpg.Pool, send: Send, *, service: str = "", batch: int = 200,
                 poll_s: float = 1.0, renew: Callable[[], Awaitable[None]] | None = None) -> None:
        self._service = service
        self._renew = renew
        self._pool = pool
        self._send = send
        self._batch = batch
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self.published = 0
        self.last_error: str | None = None

    def wake(self) -> None:
        """Ask the relay to flush now (called after a handler's transaction commits)."""
        self._wake.set()

    async def run(self) -> None:
        """Flush whenever woken, and at least every `poll_s` (rows left by a crash)."""
        backoff = Backoff(0.2)
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
                self.last_error = None
                backoff.succeeded()
            except Exception as error:  # retried: the rows stay in the outbox
                self.last_error = f"{type(error).__name__}: {error}"
                delay = backoff.failed()
                log.warning("outbox.relay_failed", error=self.last_error, retry_in=delay)
                if isinstance(error, STUCK_PRODUCER_ERRORS) and self._renew is not None:
                    await self._renew()
                    log.warning("outbox.producer_renewed", after=type(error).__name__)
                await asyncio.sleep(delay)
                self._wake.set()

    async def flush(self) -> int:
        """Publish every unpublished row, oldest first; returns how many were sent."""
        sent = 0
        async with self._pool.acquire() as conn:
            # Only one relay per schema publishes at a time, so order is kept.
            async with conn.transaction():
                await conn.execute("select pg_advisory_xact_lock(hashtext('outbox:' || current_schema()))")
                while rows := await conn.fetch(
                    "select seq, topic, key, payload from outbox where published_at is null "
                    "order by seq limit $1",
                    self._batch,
                ):
                    # Hand the whole batch to the idempotent producer, then wait for every
                    # acknowledgement: it keeps per-partition order with several requests in flight.
                    acks = [await self._send(row["topic"], row["key"].encode(), bytes(row["payload"]))
                            for row in rows]
                    await asyncio.gather(*acks)
                    await conn.execute(
                        "update outbox set published_at = now() where seq = any($1::bigint[])",
                        [row["seq"] for row in rows],
                    )
                    sent += len(rows)
                    if len(rows) < self._batch:
                        break  # that was the last of them: no select that finds nothing
        self.published += sent
        metrics.OUTBOX_PUBLISHED.labels(self._service).inc(sent)
        return sent
