"""Gates' durable timers: a promotion that a time gate holds is judged again when its timer comes due.

Timers live in PostgreSQL (table `timers`), written in the transaction that records the
pending verdict, so a timer survives a restart: one that came due while gates was down
fires as soon as it is back. Firing locks the due rows (`for update skip locked`, so two
gates instances never fire one timer twice), judges those promotions with the handlers'
own code, sets or removes their timers and puts the verdicts in the outbox, all in one
transaction.
"""

from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from services.gates import repository
from services.gates.handlers import GatesHandlers
from shared.platform import metrics
from shared.platform.outbox import enqueue
from shared.platform.runtime import ServiceRuntime

log = structlog.get_logger()


class TimerLoop:
    """Fires due timers; the runtime repeats `fire_due`, sleeping until the earliest timer is due
    (looking again at least every `max_sleep_s`)."""

    def __init__(self, runtime: ServiceRuntime, handlers: GatesHandlers, *, max_sleep_s: float = 1.0,
                 batch: int = 100, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.runtime = runtime
        self.handlers = handlers
        self.max_sleep_s = max_sleep_s
        self.batch = batch
        self.clock = clock

    async def fire_due(self) -> float:
        """Fire every timer due now in one transaction; returns the seconds to sleep before looking again."""
        assert self.runtime.pool is not None and self.runtime.relay is not None
        now = self.clock()
        async with self.runtime.pool.acquire() as conn:
            async with conn.transaction():
                due = await repository.due_timers(conn, now, self.batch)
                emitted = []
                fired = []
                for timer in due:
                    service, version, env, due_at = timer["service"], timer["version"], timer["env"], timer["due_at"]
                    if not await conn.fetchval("select pg_try_advisory_xact_lock(hashtext($1))",
                                               self.runtime.subject_lock(service)):
                        continue  # a handler is judging this service now; the timer stays due for the next look
                    fired.append(timer)
                    # Removed first: judging sets it again if a time gate still holds the promotion.
                    await repository.set_timer(conn, service, version, env, None)
                    verdicts = await self.handlers.on_timer(conn, service, version, env, now)
                    key = f"timer/{service}/{version}/{env}/{due_at.isoformat()}"
                    emitted += [self.runtime.timed_event(data, key, i, correlation_id=timer["correlation_id"])
                                for i, data in enumerate(verdicts)]
                await enqueue(conn, emitted)
            upcoming = await repository.next_due(conn)
        self.runtime.committed(emitted)
        for timer in fired:
            lateness = (now - timer["due_at"]).total_seconds()
            metrics.TIMER_LATENESS_SECONDS.labels(self.runtime.name).observe(lateness)
            log.info("timer.fired", env=timer["env"], artifact=f"{timer['service']}:{timer['version']}",
                     due_at=timer["due_at"].isoformat(), lateness_ms=round(lateness * 1000, 1))
        if len(fired) < len(due):
            return 0.05  # a handler holds one of them: look again right after it commits
        if len(due) == self.batch:
            return 0.0  # more may be due already
        if upcoming is None:
            return self.max_sleep_s
        return min(max((upcoming - self.clock()).total_seconds(), 0.0), self.max_sleep_s)
