"""A bounded load generator for loopback URLs: paced GET requests for a duration or a count, then a report.

It only ever talks to 127.0.0.1, localhost or ::1: it exists to put traffic on an environment's
router during a canary, never to load someone else's server.
"""

import asyncio
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

LOOPBACK = ("127.0.0.1", "localhost", "::1")
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class LoadReport:
    """What a run sent and got back: ok is 2xx/3xx, failed_status counts the rest by status."""

    sent: int
    ok: int
    failed_status: dict[int, int]
    transport_errors: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float

    @property
    def failed(self) -> int:
        """Requests that got no answer or an answer of 400 and above."""
        return sum(self.failed_status.values()) + self.transport_errors

    def summary(self) -> str:
        """'500 requests in 10.0 s: 498 ok, 2 failed (500: 2), 0 transport errors; p50 2.1 ms, p99 9.8 ms'."""
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(self.failed_status.items()))
        return (f"{self.sent} requests in {self.elapsed_s:.1f} s: {self.ok} ok, "
                f"{sum(self.failed_status.values())} failed{f' ({statuses})' if statuses else ''}, "
                f"{self.transport_errors} transport errors; p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms")

    def as_dict(self) -> dict:
        """The report as JSON-ready data (failed included)."""
        return {"sent": self.sent, "ok": self.ok, "failed": self.failed,
                "failed_status": {str(status): n for status, n in sorted(self.failed_status.items())},
                "transport_errors": self.transport_errors, "elapsed_s": round(self.elapsed_s, 3),
                "p50_ms": round(self.p50_ms, 2), "p99_ms": round(self.p99_ms, 2)}


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100) of ascending values; 0.0 for none."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def loopback_url(url: str, path: str) -> httpx.URL:
    """`path` on the server of `url`; ValueError unless that server is on the loopback interface."""
    base = httpx.URL(url)
    if base.scheme not in ("http", "https") or base.host not in LOOPBACK:
        raise ValueError(f"load goes to loopback URLs only (http://127.0.0.1, localhost or [::1]), not {url!r}")
    if not path.startswith("/"):
        raise ValueError(f"the path must start with '/', not {path!r}")
    return base.join(path)


def _check_bounds(rate: float, duration: float | None, count: int | None, concurrency: int) -> None:
    if duration is None and count is None:
        raise ValueError("give a duration, a count, or both: the load must end")
    if not rate > 0 or concurrency < 1 or (duration is not None and not duration > 0) or (
            count is not None and count < 1):
        raise ValueError("rate and duration must be above 0, count and concurrency at least 1")


@dataclass
class _Tally:
    sent: int = 0
    done: int = 0
    transport_errors: int = 0
    statuses: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def report(self, elapsed_s: float) -> LoadReport:
        ordered = sorted(self.latencies_ms)
        failed = {status: n for status, n in self.statuses.items() if status >= 400}
        return LoadReport(sent=self.sent, ok=sum(n for status, n in self.statuses.items() if status < 400),
                          failed_status=failed, transport_errors=self.transport_errors, elapsed_s=elapsed_s,
                          p50_ms=percentile(ordered, 50), p99_ms=percentile(ordered, 99))


async def _request(client: httpx.AsyncClient, target: httpx.URL, tally: _Tally) -> None:
    start = time.perf_counter()
    try:
        response = await client.get(target)
    except httpx.TransportError:  # refused, reset, timed out: no answer at all
        tally.transport_errors += 1
    else:
        tally.statuses[response.status_code] += 1
        tally.latencies_ms.append(1000 * (time.perf_counter() - start))
    tally.done += 1


async def _stopped_before(due: float, stop: asyncio.Event | None) -> bool:
    """Sleep until the monotonic time `due`; True if `stop` was set first."""
    delay = max(0.0, due - time.monotonic())
    if stop is None:
        await asyncio.sleep(delay)
        return False
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        return False
    return True


async def generate(url: str, *, rate: float, duration: float | None = None, count: int | None = None,
                   concurrency: int = 16, path: str = "/", on_progress: Callable[[int, int], None] | None = None,
                   stop: asyncio.Event | None = None) -> LoadReport:
    """GET `path` on the loopback server of `url` `rate` times a second until `duration` s, `count` or `stop`.

    Requests start on a fixed schedule (the n-th at n / rate s), at most `concurrency` at a time; a
    request started before the end finishes (within REQUEST_TIMEOUT). `on_progress(done, failed)`
    is called after every request.
    """
    target = loopback_url(url, path)
    _check_bounds(rate, duration, count, concurrency)
    tally, slots, t0 = _Tally(), asyncio.Semaphore(concurrency), time.monotonic()

    async def one() -> None:
        try:
            await _request(client, target, tally)
        finally:
            slots.release()
        if on_progress is not None:
            on_progress(tally.done, tally.transport_errors + sum(n for s, n in tally.statuses.items() if s >= 400))

    # trust_env=False: an HTTP_PROXY in the environment must not take loopback traffic elsewhere
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, trust_env=False,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async with asyncio.TaskGroup() as group:
            for n in itertools.count():
                if (count is not None and n >= count) or (duration is not None and n / rate >= duration):
                    break
                if await _stopped_before(t0 + n / rate, stop):
                    break
                await slots.acquire()
                if duration is not None and time.monotonic() - t0 >= duration:  # fell behind: time is up
                    slots.release()
                    break
                tally.sent += 1
                group.create_task(one())
    return tally.report(time.monotonic() - t0)
