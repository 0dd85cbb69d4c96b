"""Drift checks: compare what runs in each environment with what the deployer promoted there, report each change
(drift.detected, drift.resolved), answer `promote drift` (drift.checked), and restore where the pipeline says so.

Only environments whose promoted release was verified, with no deployment in flight, are compared (a half-made
rollout is not drift). The driver looks without holding any lock (its engine's API, /proc, /version); a new
difference must be seen by two looks a second apart. What was found is then judged in one short transaction
that takes the environment's deploy lock only if it is free and re-reads what was promoted: if a deployment
started or finished meanwhile, the look is thrown away. A restore is a deployment (purpose `restore`) of the
promoted release, caused by the drift.detected it answers, under the same lock as every deployment.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import httpx
import structlog

from services.deployer import repository
from services.deployer.domain import Target
from services.deployer.drift import DriftState, Expected, confirmed, differences, expected_variables, next_drift
from services.deployer.driver import Driver
from shared.platform import inbox
from shared.contracts import limits
from shared.contracts.events import (DriftChecked, DriftCheckRequested, DriftDetected, DriftResolved, EnvironmentDrift,
                                     Event, PipelineApplied, new_event)
from shared.platform.outbox import enqueue
from shared.contracts.pipeline import BlueGreen, PipelineDefinition, Resources, Strategy
from shared.platform.runtime import ServiceRuntime

log = structlog.get_logger()

CHECKS_AT_ONCE = 4
"""Environments looked at side by side in a round."""
PER_ROUND = 200
"""Environments checked per round at most, least recently checked first."""
CONFIRM_AFTER_S = 1.0
"""A difference counts only if a second look this much later finds it too."""
IDLE_S = 5.0
"""The pause between rounds when periodic checks are off (owed restores are still done)."""
RESTORE_SWITCH = BlueGreen(retire_after=0)
"""A restore behind the router: the promoted release starts in the other lane and takes all traffic at once."""

Deploy = Callable[[Event, Target, Strategy, Callable[[asyncpg.Connection], Awaitable[bool]]], Awaitable[None]]


class DriftWatcher:
    """Checks the environments at an interval and on request, and restores drifted ones set to `restore`."""

    def __init__(self, runtime: ServiceRuntime, drivers: dict[str, Driver], deploy: Deploy,
                 interval_s: float) -> None:
        self.runtime, self.drivers, self.deploy, self.interval_s = runtime, drivers, deploy, interval_s

    async def step(self) -> float:
        """One round: check every watched environment, then restore what is owed; seconds until the next."""
        started = time.monotonic()
        if self.interval_s > 0:
            async with self.runtime.pool.acquire() as conn:
                rows = await repository.drift_candidates(conn, PER_ROUND)
            await self.check_all(rows)
        await self.restore_owed()
        if self.interval_s <= 0:
            return IDLE_S
        return max(0.5, self.interval_s - (time.monotonic() - started))

    async def remember_policies(self, data: PipelineApplied) -> None:
        """on_drift of each environment, as the pipeline just applied says (idempotent: a redelivery rewrites it)."""
        pipeline = PipelineDefinition.model_validate(data.definition)
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            await repository.set_drift_policies(conn, data.service, {e.name: e.on_drift for e in pipeline.environments})

    async def answer(self, event: Event, data: DriftCheckRequested) -> None:
        """Check the service's environments now (or the one named) and say what was found (drift.checked)."""
        async with self.runtime.pool.acquire() as conn:
            if await inbox.handled(conn, event):
                return
            rows = await repository.promoted(conn, data.service, data.env)
        found = dict(zip((row["env"] for row in rows[:limits.MAX_ENVIRONMENTS]),
                         await self.check_all(rows[:limits.MAX_ENVIRONMENTS]), strict=True))
        if data.env is not None and data.env not in found:
            found[data.env] = EnvironmentDrift(state="not-checked", reason="the deployer has verified no release "
                                                                           "there since it watches drift")
        answered = DriftChecked(service=data.service, request_id=event.id, requested_by=data.requested_by,
                                environments=found)

        async def work(conn: asyncpg.Connection) -> list[Event]:
            return [self.runtime.event(answered, event)]

        await self.runtime.once(event, work)
        await self.restore_owed(data.service)

    async def check_all(self, rows: list[asyncpg.Record]) -> list[EnvironmentDrift]:
        """Check the environments (`repository.promoted` rows), CHECKS_AT_ONCE side by side, with what each
        driver lists once for them all and one HTTP client for every /version."""
        surveys: dict[str, object] = {}
        for name in sorted({row["driver"] for row in rows}):
            driver = self.drivers.get(name)
            try:
                surveys[name] = await driver.survey() if driver is not None else None
            except (ConnectionError, OSError) as error:  # the engine does not answer: nothing can be said
                surveys[name] = error
        gate = asyncio.Semaphore(CHECKS_AT_ONCE)
        unchanged: list[tuple[str, str]] = []
        async with httpx.AsyncClient() as http:

            async def one(row: asyncpg.Record) -> EnvironmentDrift:
                async with gate:
                    return await self.check(row, Look(http, surveys.get(row["driver"]), unchanged))

            checked = list(await asyncio.gather(*(one(row) for row in rows)))
        if unchanged:
            async with self.runtime.pool.acquire() as conn:
                await repository.checked(conn, unchanged)
        return checked

    async def check(self, row: asyncpg.Record, look: "Look") -> EnvironmentDrift:
        """Compare one environment (a `repository.promoted` row) with what runs there; record and report a change."""
        release = dict(version=row["version"], digest=row["digest"])
        if row["state"] != "verified":
            return EnvironmentDrift(state="not-checked", **release, differences=_recorded(row),
                                    reason="its last deployment failed: nothing is compared until one is verified")
        if row["in_flight"]:
            return EnvironmentDrift(state="not-checked", **release, reason="a deployment is in flight")
        try:
            if isinstance(look.listing, Exception):
                raise look.listing
            found = await self._look(expected_of(row), _recorded(row), look)
        except (ConnectionError, OSError) as error:  # the engine does not answer: nothing can be said
            log.warning("drift.not_checked", service=row["service"], env=row["env"], error=str(error))
            return EnvironmentDrift(state="not-checked", **release, reason=_line(f"cannot look: {error}"))
        if found is None:
            return EnvironmentDrift(state="not-checked", **release, reason=f"the {row['driver']} driver runs nothing")
        if not await self._judge(row, found, look):
            return EnvironmentDrift(state="not-checked", **release, reason="a deployment started meanwhile")
        return EnvironmentDrift(state="drifted" if found else "in-sync", **release, differences=found)

    async def _look(self, expected: Expected, recorded: list[str], look: "Look") -> list[str] | None:
        """The differences two looks a second apart agree on (one look when they are those recorded: nothing new to
        confirm, so a long-drifted environment costs one look a round; the second look lists anew); None if the
        driver runs nothing to compare."""
        driver = self.drivers.get(expected.driver)
        observed = await driver.observe(expected, look.http, look.listing) if driver is not None else None
        if observed is None:
            return None
        found = differences(expected, observed)
        if not found or found == recorded:
            return found
        await asyncio.sleep(CONFIRM_AFTER_S)
        again = await driver.observe(expected, look.http, await driver.survey())
        return confirmed(found, differences(expected, again))

    async def _judge(self, looked: asyncpg.Record, found: list[str], look: "Look") -> bool:
        """Record what was found and emit the change, if the environment is still as it was looked at (False: a
        deployment holds its lock, or changed what was promoted, meanwhile). Found as recorded: only noted in
        `look.unchanged` (the round records when those were checked in one statement)."""
        service, env = looked["service"], looked["env"]
        if next_drift(_drift_state(looked), found)[1] is None:
            look.unchanged.append((service, env))
            return True
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("select pg_try_advisory_xact_lock(hashtext($1))",
                                       repository.deploy_lock(service, env)):
                return False
            rows = await repository.promoted(conn, service, env)
            now = rows[0] if rows else None
            if now is None or now["deployment_id"] != looked["deployment_id"] or now["state"] != "verified" \
                    or now["in_flight"]:
                return False
            new, change = next_drift(_drift_state(now), found)
            if change is None:
                await repository.checked(conn, [(service, env)])
                return True
            event = self._detected(now, new, found) if change == "detected" else self._resolved(now)
            detected = json.loads(now["detected"]) if change == "resolved" else event.envelope.data
            await repository.save_drift(conn, service, env, new.generation, found or None,
                                        now["detected_id"] if change == "resolved" else event.id, detected,
                                        change == "detected" and now["on_drift"] == "restore")
            await enqueue(conn, [event])
        self.runtime.committed([event])
        log.info(f"drift.{change}", service=service, env=env, differences=found)
        return True

    def _detected(self, row: asyncpg.Record, state: DriftState, found: list[str]) -> Event:
        """drift.detected, its id from the release promoted and the generation (once per change of what differs)."""
        data = DriftDetected(service=row["service"], env=row["env"], version=row["version"], digest=row["digest"],
                             config_version=row["config_version"], slot=row["slot"], driver=row["driver"],
                             differences=found, on_drift=row["on_drift"])
        return self.runtime.timed_event(data, f"drift/{row['service']}/{row['env']}/{row['deployment_id']}/"
                                              f"{state.generation}")

    def _resolved(self, row: asyncpg.Record, how: str = "gone", target: Target | None = None) -> Event:
        """drift.resolved of the row's drift, once per drift.detected."""
        data = DriftResolved(service=row["service"], env=row["env"],
                             version=target.version if target else row["version"],
                             digest=target.digest if target else row["digest"], how=how, drift_id=row["detected_id"],
                             deployment_id=target.deployment_id if target else None)
        return self.runtime.timed_event(data, f"resolved/{row['detected_id']}")

    async def settle(self, conn: asyncpg.Connection, target: Target, verified: bool,
                     serving_changed: bool) -> list[Event]:
        """After a deployment into the environment (in the transaction that saves it): a verified one resolves the
        drift (how: its purpose); one that changed what serves, or a restore whatever came of it, owes no restore."""
        row = await repository.drift(conn, target.service, target.env)
        if row is None:
            return []
        if verified and row["differences"] is not None:
            await repository.drift_settled(conn, target.service, target.env, resolved=True)
            return [self._resolved(row, target.purpose, target)]
        if serving_changed or target.purpose == "restore":
            await repository.drift_settled(conn, target.service, target.env, resolved=False)
        return []

    async def restore_owed(self, service: str | None = None) -> None:
        """Restore each drifted environment set to `restore` whose restore is not done yet."""
        async with self.runtime.pool.acquire() as conn:
            rows = await repository.owed_restores(conn)
        for row in rows:
            if service is None or row["service"] == service:
                await self.restore(row)

    async def restore(self, row: asyncpg.Record) -> None:
        """Redeploy the promoted release (same digest and config), caused by the drift.detected it answers."""
        detected = DriftDetected.model_validate(json.loads(row["detected"]))
        cause = new_event(detected, source=f"/promote/{self.runtime.name}", event_id=row["detected_id"])
        resources = None if row["resources"] is None else Resources.model_validate(json.loads(row["resources"]))
        target = Target(cause.id, row["service"], row["env"], row["version"], row["digest"], json.loads(row["config"]),
                        row["config_version"], purpose="restore", driver=row["driver"], location=row["location"],
                        replicas=row["replicas"], resources=resources)

        async def still_owed(conn: asyncpg.Connection) -> bool:
            rows = await repository.promoted(conn, target.service, target.env)
            now = rows[0] if rows else None
            return now is not None and now["restore_owed"] and now["detected_id"] == cause.id and \
                now["state"] == "verified" and (now["digest"], now["config_version"]) == \
                (target.digest, target.config_version)

        log.info("drift.restoring", service=target.service, env=target.env, version=target.version)
        await self.deploy(cause, target, RESTORE_SWITCH if row["routed"] else "rolling", still_owed)


@dataclass(frozen=True)
class Look:
    """What a round's checks share: one HTTP client, and what the environment's driver listed for the round (or why
    it could not)."""

    http: httpx.AsyncClient
    listing: object | None
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    """(service, env) of the environments found as recorded."""


def expected_of(row: asyncpg.Record) -> Expected:
    """What should run, from a `repository.promoted` row."""
    config = json.loads(row["config"])
    return Expected(service=row["service"], env=row["env"], slot=row["slot"], version=row["version"],
                    digest=row["digest"], config_version=row["config_version"], driver=row["driver"], port=row["port"],
                    location=row["location"], replicas=row["replicas"],
                    variables=expected_variables(row["env"], config, row["version"], row["digest"],
                                                 row["config_version"]))


def _drift_state(row: asyncpg.Record) -> DriftState:
    return DriftState(row["generation"] or 0, tuple(_recorded(row)) if row["differences"] else None)


def _recorded(row: asyncpg.Record) -> list[str]:
    return json.loads(row["differences"]) if row["differences"] else []


def _line(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)[:300]
