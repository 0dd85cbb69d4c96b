"""A chaos monkey for the crash tests: SIGKILL a random service at a random moment, restart it."""

import asyncio
import random
import signal
from dataclasses import dataclass, field

import devstack


@dataclass
class Chaos:
    """Kills and restarts services until stopped; counts what it did."""

    seed: int
    services: tuple[str, ...] = devstack.SERVICES
    instances: tuple[int, ...] = (1,)
    pause: tuple[float, float] = (0.3, 1.5)
    downtime: tuple[float, float] = (0.1, 1.0)
    kills: int = 0
    restarts: int = 0
    log: list[str] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Kill, wait, restart, repeat; on stop, make sure every service runs again."""
        rng = random.Random(self.seed)
        try:
            while not self._stopping.is_set():
                try:
                    await asyncio.wait_for(self._stopping.wait(), rng.uniform(*self.pause))
                    break
                except TimeoutError:
                    pass
                name, instance = rng.choice(self.services), rng.choice(self.instances)
                if await asyncio.to_thread(devstack.stop_service, name, signal.SIGKILL, 20.0, instance):
                    self.kills += 1
                    self.log.append(f"kill {name}-{instance}")
                await asyncio.sleep(rng.uniform(*self.downtime))
                await asyncio.to_thread(devstack.start_service, name, instance)
                self.restarts += 1
        finally:
            for name in self.services:
                for instance in self.instances:
                    await asyncio.to_thread(devstack.start_service, name, instance)

    def stop(self) -> None:
        """Finish the current step and stop."""
        self._stopping.set()
