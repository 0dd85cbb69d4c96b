"""Waiting for the outcome of a command (a gate's verdict, a rollback's end) without a consumer group.

One consumer per API process reads the gate and rollback topics from their end; a request registers
what it waits for *before* it publishes, so the outcome cannot slip past between the two.
"""

import asyncio
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from shared.contracts import topics
from shared.platform.client import partitions_of
from shared.platform.credentials import kafka_options
from shared.contracts.events import Event, InvalidEvent, parse_event
from shared.platform.settings import Settings

log = structlog.get_logger()
WATCHED = (topics.GATES, topics.ROLLBACKS, topics.DEPLOYMENTS)


class Outcomes:
    """Hands each event of the watched topics to the requests waiting for one like it."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = AIOKafkaConsumer(**kafka_options(settings, "api"), enable_auto_commit=False)
        self._waiting: list[tuple[Callable[[Event], bool], asyncio.Future]] = []
        self._listeners: list[tuple[Callable[[Event], None], Callable[[], bool]]] = []
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Connect and stand at the end of the watched topics."""
        await self._consumer.start()
        partitions = await partitions_of(self._consumer, WATCHED)
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve now: what follows is "after start"
            await self._consumer.position(partition)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop reading; requests still waiting time out."""
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()

    def expect(self, predicate: Callable[[Event], bool]) -> asyncio.Future:
        """A future that gets the first event from now on that matches."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((predicate, future))
        return future

    def listen(self, listener: Callable[[Event], None], active: Callable[[], bool]) -> None:
        """Hand every event of the watched topics to `listener` too (the live feed) while `active()`; it must not
        wait."""
        self._listeners.append((listener, active))

    def forget(self, future: asyncio.Future) -> None:
        """Stop waiting (the request timed out or ended)."""
        self._waiting = [(p, f) for p, f in self._waiting if f is not future]

    async def _run(self) -> None:
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000)
            except KafkaError as error:  # reconnects by itself; waiting requests may time out meanwhile
                log.warning("outcomes.fetch_failed", error=str(error))
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    self._hand_over(record.value or b"")

    def _hand_over(self, raw: bytes) -> None:
        listeners = [listener for listener, active in self._listeners if active()]
        if not self._waiting and not listeners:  # nobody waits or listens: nothing to parse for
            return
        try:
            event = parse_event(raw)
        except InvalidEvent:
            return
        for listener in listeners:
            listener(event)
        still = []
        for predicate, future in self._waiting:
            if future.done():
                continue
            if predicate(event):
                future.set_result(event)
            else:
                still.append((predicate, future))
        self._waiting = still
