"""Blue/green and canary deployments: two lanes per environment behind the router.

The release starts in the idle lane and is verified on that lane's own port. Blue/green then
sends all traffic to it in one graceful router reload. A canary beside a live release moves
traffic in the pipeline's steps, each judged on the canary's own requests: that takes minutes
to hours, so it is a durable state machine of its own (services/deployer/canaries.py), which
ends here (`complete` or `abort`). After a switch the previous lane stays warm for
`retire_after`, so that a rollback to it is a switch back, then a background task stops it.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import httpx
import structlog

from services.deployer import repository
from services.deployer.repository import Deployments, PostgresDeployments
from services.deployer.domain import LANES, Target, choose_lane, process_environment, traffic_steps, \
    verification_failure
from services.deployer.driver import Driver
from services.deployer.router import Router, RouterError, spread
from shared.contracts.pipeline import BlueGreen, Canary
from shared.platform.runtime import ServiceRuntime

log = structlog.get_logger()

RETIRE_CHECK_SECONDS = 1.0


@dataclass
class Outcome:
    """What a routed deployment did: what runs where, the checks, and a failure if any."""

    lane: str
    pid: int | None
    checks: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    port: int = 0


@dataclass
class Stepwise:
    """A canary verified in its lane, whose traffic is to move in `steps` (each share below 100 % judged) while
    `serving` (the lane that took the traffic) takes the rest: a durable canary from here on."""

    outcome: Outcome
    serving: str
    steps: tuple[int, ...]


def lane_slot(env: str, lane: str) -> str:
    """The driver's name for a lane's process (its run file and log are named after it)."""
    return f"{env}.{lane}"


class RoutedDeployer:
    """Deploys into routed environments through a driver whose releases serve traffic, and the router."""

    def __init__(self, runtime: ServiceRuntime, drivers: dict[str, Driver], router: Router, port_base: int,
                 resolve_secret, store: Callable[[asyncpg.Connection], Deployments] = PostgresDeployments) -> None:
        self.runtime, self.drivers, self.router = runtime, drivers, router
        self.port_base, self.resolve_secret, self.store = port_base, resolve_secret, store

    async def deploy(self, target: Target, strategy: BlueGreen | Canary, route: asyncpg.Record,
                     lanes: dict[str, asyncpg.Record]) -> Outcome | Stepwise:
        """Start (or find) the release in a lane, verify it there, then move the traffic to it at once, or (a
        canary with a live release beside it) hand it over to move in steps."""
        live, driver = route["live"], self.drivers[target.driver]
        running = {lane: await asyncio.to_thread(driver.launched, target.service, lane_slot(target.env, lane))
                   for lane in LANES}
        lane, start = choose_lane(live, running, target)
        port = lanes[lane]["port"]
        if start:
            pid = await self._start(target, lane, port, running[lane])
        else:
            pid = running[lane].pid
            log.info("deployment.reattached", pid=pid, lane=lane)
        outcome = Outcome(lane, pid, port=route["port"])
        outcome.checks = await driver.verify(target, lane_slot(target.env, lane), pid, port)
        outcome.failure = verification_failure(target, outcome.checks)
        if outcome.failure is not None:
            if lane != live:
                await asyncio.to_thread(driver.stop, target.service, lane_slot(target.env, lane), pid)
                outcome.pid = None
            return outcome
        live_alive = live is not None and runs_anything(running.get(live))
        kind = "canary" if isinstance(strategy, Canary) else "blue_green"
        steps = traffic_steps(kind, strategy.steps if isinstance(strategy, Canary) else (100,), lane, live,
                              live_alive)
        serving = live if live_alive and live != lane else None  # the release the new one shares traffic with
        if steps != (100,):  # a canary's steps take as long as they take: services/deployer/canaries.py
            return Stepwise(outcome, serving, steps)
        return await self.complete(target, route, lanes, outcome, serving)

    async def complete(self, target: Target, route, lanes, outcome: Outcome, serving: str | None) -> Outcome:
        """All traffic to the release, then the check that the router answers it; either failing aborts."""
        started = time.monotonic()
        try:
            await self.publish(target, route, lanes, serving, 0, outcome.lane, 100)
        except RouterError as error:  # e.g. nginx not running: a failed deployment, not a lost order
            return await self.abort(target, route, lanes, serving, outcome, str(error))
        outcome.checks["switch"] = f"all traffic to {outcome.lane} in {(time.monotonic() - started) * 1000:.0f} ms"
        outcome.checks["router"] = await self._check_router(route["port"], target.version)
        if outcome.checks["router"] != "passed" and outcome.lane != route["live"]:
            return await self.abort(target, route, lanes, serving, outcome, f"router: {outcome.checks['router']}")
        return outcome

    async def abort(self, target: Target, route, lanes, serving: str | None, outcome: Outcome,
                    failure: str) -> Outcome:
        """All traffic back to the release that served before (if any); the new one stops."""
        outcome.failure = failure
        if serving is not None:
            try:
                await self.publish(target, route, lanes, serving, 100, None)
            except RouterError as error:
                log.error("router.restore_failed", error=str(error))
        if outcome.pid is not None:  # None: nothing of it runs (a rebuilt canary whose lane had stopped)
            await asyncio.to_thread(self.drivers[target.driver].stop, target.service,
                                    lane_slot(target.env, outcome.lane), outcome.pid)
        outcome.pid = None
        return outcome

    async def _start(self, target: Target, lane: str, port: int, previous) -> int:
        """Start the release in the idle lane (what is left there stops first); the pid."""
        driver, slot = self.drivers[target.driver], lane_slot(target.env, lane)
        variables = process_environment(target, port, self.resolve_secret)
        await asyncio.to_thread(driver.preflight, target, slot)
        if previous is not None and (previous.alive or previous.leftover):
            await asyncio.to_thread(driver.stop, target.service, slot, previous.pid)
        async with self.runtime.pool.acquire() as conn:
            await self.store(conn).record_start(target)
        pid = await asyncio.to_thread(driver.start, target, slot, variables)
        log.info("deployment.process_started", pid=pid, port=port, lane=lane)
        return pid

    async def publish(self, target: Target, route, lanes, live: str | None, live_share: int,
                      canary: str | None, canary_share: int = 0) -> None:
        """The router sends `live_share` % of the environment's traffic to `live`, `canary_share` % to `canary`."""
        backends = spread((await self.ports(target, lanes, live), live_share) if live is not None else None,
                          (await self.ports(target, lanes, canary), canary_share) if canary is not None else None)
        await asyncio.to_thread(self.router.publish, target.service, target.env, route["port"], backends)

    async def ports(self, target: Target, lanes, lane: str) -> list[int]:
        """Where the lane's release serves: its port, and one per further replica."""
        return await asyncio.to_thread(self.drivers[target.driver].ports, target.service,
                                       lane_slot(target.env, lane), lanes[lane]["port"])

    async def _check_router(self, port: int, version: str) -> str:
        """The router's port answers the release's version (the switch took effect)."""
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                answered = (await client.get(f"http://127.0.0.1:{port}/version")).json().get("version")
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            return f"GET /version through the router failed: {type(error).__name__}"
        return "passed" if answered == version else f"the router answered version {answered!r}"

    async def save(self, conn: asyncpg.Connection, target: Target, outcome: Outcome, strategy: BlueGreen | Canary,
                   route) -> None:
        """Record the lanes after the deployment (in the transaction that saves its events)."""
        if outcome.failure is not None:
            if outcome.pid is None and outcome.lane != route["live"]:
                await self.store(conn).set_lane(target, outcome.lane, None, "failed")
            return
        previous = route["live"] if route["live"] != outcome.lane else None
        await self.store(conn).switch(target, outcome.lane, outcome.pid, previous, strategy.retire_after)

    async def retire_due(self) -> float:
        """Stop the processes of lanes whose warm time is over; seconds until the next look."""
        async with self.runtime.pool.acquire() as conn:
            for lane in await repository.due_for_retirement(conn):
                lock = repository.deploy_lock(lane["service"], lane["env"])
                if not await conn.fetchval("select pg_try_advisory_lock(hashtext($1))", lock):
                    continue  # a deployment is busy in this environment; next time
                try:
                    slot = lane_slot(lane["env"], lane["lane"])
                    # An image in the lane: the container driver's; a file: the local driver's.
                    driver = self.drivers["container" if lane["location"] else "local"]
                    running = await asyncio.to_thread(driver.launched, lane["service"], slot)
                    if running is not None and running.alive and running.pid == lane["pid"]:
                        await asyncio.to_thread(driver.stop, lane["service"], slot, running.pid)
                    await repository.retired(conn, lane["service"], lane["env"], lane["lane"])
                    log.info("lane.retired", service=lane["service"], env=lane["env"], lane=lane["lane"])
                finally:
                    await conn.execute("select pg_advisory_unlock(hashtext($1))", lock)
        return RETIRE_CHECK_SECONDS


def runs_anything(running) -> bool:
    """Some process is alive in the lane."""
    return running is not None and running.alive
