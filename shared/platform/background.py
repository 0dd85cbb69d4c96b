"""A service's background tasks: steps repeated alongside the consumer, retried with backoff when they fail.

Split out of runtime.py along its seam: the runtime starts them once the database is ready and cancels them at
shutdown; /health shows what one is failing with.
"""

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from shared.platform.backoff import Backoff

log = structlog.get_logger()

Step = Callable[[], Awaitable[float]]


class BackgroundTasks:
    """Named steps, each run over and over, sleeping the seconds it returns in between."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Step]] = []
        self._tasks: list[asyncio.Task] = []
        self.errors: dict[str, str] = {}
        """What a background task is failing with right now, by task name (shown on /health)."""

    def add(self, name: str, step: Step) -> None:
        """Register `step` under `name`; it runs from `start` on."""
        self._steps.append((name, step))

    def start(self) -> None:
        self._tasks += [asyncio.create_task(self._repeat(name, step)) for name, step in self._steps]

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _repeat(self, name: str, step: Step) -> None:
        """A failing step is retried with backoff (0.2 s doubling to 5 s), its error kept until a step succeeds."""
        backoff = Backoff(0.2)
        while True:
            try:
                pause = await step()
                self.errors.pop(name, None)
                backoff.succeeded()
            except Exception as error:  # retried: a background step's work is kept in the database
                self.errors[name] = f"{type(error).__name__}: {error}"
                pause = backoff.failed()
                log.warning("background.failed", task=name, error=self.errors[name], retry_in=pause)
            await asyncio.sleep(pause)
