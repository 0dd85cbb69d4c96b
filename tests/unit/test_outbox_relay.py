"""The outbox relay takes a new producer when the one it has can never send again (OutOfOrderSequenceNumber after
a broker restarted with batches in flight, seen in CI), and the rows stay in the outbox until sent."""

import asyncio
import contextlib

from aiokafka.errors import OutOfOrderSequenceNumber, RequestTimedOutError

from shared.platform.outbox import OutboxRelay


class FakeConnection:
    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    @contextlib.asynccontextmanager
    async def transaction(self):
        yield

    async def execute(self, sql: str, *args) -> None:
        if sql.startswith("update outbox set published_at"):
            for row in self.rows:
                row["published"] = row["published"] or row["seq"] in args[0]

    async def fetch(self, sql: str, limit: int) -> list[dict]:
        return [row for row in self.rows if not row["published"]][:limit]


class FakePool:
    def __init__(self, rows: list[dict]) -> None:
        self.conn = FakeConnection(rows)

    @contextlib.asynccontextmanager
    async def acquire(self):
        yield self.conn


def outbox(n: int) -> list[dict]:
    return [{"seq": i, "topic": "promotion.gates", "key": "pay", "payload": b"{}", "published": False}
            for i in range(n)]


async def run_until(relay: OutboxRelay, rows: list[dict], timeout: float = 5.0) -> None:
    task = asyncio.create_task(relay.run())
    relay.wake()
    try:
        async with asyncio.timeout(timeout):
            while not all(row["published"] for row in rows):
                await asyncio.sleep(0.01)
    finally:
        task.cancel()


def producer(fails_with: Exception | None):
    """A send that fails with `fails_with` until renewed, then acknowledges every record."""
    state = {"stuck": fails_with is not None, "renewed": 0, "sent": 0}

    async def send(topic: str, key: bytes, payload: bytes) -> asyncio.Future:
        ack = asyncio.get_running_loop().create_future()
        if state["stuck"]:
            ack.set_exception(fails_with)
        else:
            state["sent"] += 1
            ack.set_result(None)
        return ack

    async def renew() -> None:
        state["renewed"] += 1
        state["stuck"] = False

    return send, renew, state


async def test_a_producer_stuck_on_its_sequence_numbers_is_renewed_and_every_row_is_sent():
    rows = outbox(3)
    send, renew, state = producer(OutOfOrderSequenceNumber())
    relay = OutboxRelay(FakePool(rows), send, renew=renew, poll_s=0.05)
    await run_until(relay, rows)
    assert state["renewed"] == 1 and state["sent"] == 3 and relay.last_error is None


async def test_a_passing_failure_is_retried_on_the_same_producer():
    rows = outbox(2)
    send, renew, state = producer(RequestTimedOutError())
    relay = OutboxRelay(FakePool(rows), send, renew=renew, poll_s=0.05)
    task = asyncio.create_task(relay.run())
    relay.wake()
    async with asyncio.timeout(5):
        while relay.last_error is None:
            await asyncio.sleep(0.01)
    task.cancel()
    assert state["renewed"] == 0 and not any(row["published"] for row in rows)  # kept, to be sent again
    assert relay.last_error.startswith("RequestTimedOutError")
