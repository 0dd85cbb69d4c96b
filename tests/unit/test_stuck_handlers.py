"""Unit tests for how long RecordRunner's handlers have been running (what /health calls stuck)."""

import asyncio
import time

from shared.contracts import topics
from shared.platform.consumer import RecordRunner
from shared.contracts.events import PromotionRequested, new_event
from tests.unit.test_record_runner import FakeRecord

DIGEST = "sha256:" + "a" * 64


class Message:
    """A FastStream KafkaMessage with manual acknowledgement that does nothing."""

    def __init__(self, value: bytes) -> None:
        self.body = value
        self.raw_message = FakeRecord(topics.REQUESTS, 0, 7, b"payments", value)

    async def ack(self) -> None:
        pass

    async def nack(self) -> None:
        pass


class Hanging:
    """A handler that runs until released."""

    def __init__(self) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()

    async def __call__(self, event, unit=None) -> None:
        self.started.set()
        await self.release.wait()


async def nothing_published(*_) -> None:
    raise AssertionError("nothing should be dead-lettered")


def a_record() -> Message:
    data = PromotionRequested(service="payments", version="1.0.0", digest=DIGEST, env="dev")
    return Message(new_event(data, source="/tests").to_bytes())


async def test_a_running_handler_counts_its_time_and_a_finished_one_counts_none():
    handler = Hanging()
    runner = RecordRunner("intake", handler, nothing_published, stuck_after_s=30.0)
    assert runner.running_for(time.monotonic()) == 0

    task = asyncio.create_task(runner.run(a_record()))
    await handler.started.wait()
    assert runner.running_for(time.monotonic() + 31) > runner.stuck_after_s  # 31 s later it would be stuck

    handler.release.set()
    await task
    assert runner.running_for(time.monotonic() + 31) == 0
