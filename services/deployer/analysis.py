"""Canary analysis: a slot's requests from the router's access log, their figures, and the verdict.

The access log has one JSON object per request (log_format promote_json, devstack/router.py):
{"t": "...", "status": 200, "upstream": "127.0.0.1:8101", "upstream_status": "200", "rt": 0.002,
"urt": "0.002", "uri": "/"}. When nginx retried on another slot, upstream, upstream_status and
urt list every attempt ("127.0.0.1:8101, 127.0.0.1:8102"); the request counts for the last one.
"""

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from shared.loadgen import percentile


@dataclass(frozen=True)
class Outcome:
    """One request a slot answered: its HTTP status and how long the slot took."""

    status: int
    latency_ms: float


@dataclass(frozen=True)
class Figures:
    """What a slot's requests show: how many, how many failed (5xx), latency percentiles."""

    requests: int
    errors: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    def as_checks(self) -> dict[str, str]:
        """The figures as strings, for an event's checks: {"requests": "25", "error_rate": "0.480", …}."""
        return {
            "requests": str(self.requests), "errors": str(self.errors), "error_rate": f"{self.error_rate:.3f}",
            "p50_ms": f"{self.p50_ms:.1f}", "p95_ms": f"{self.p95_ms:.1f}", "p99_ms": f"{self.p99_ms:.1f}",
            "max_ms": f"{self.max_ms:.1f}",
        }


@dataclass(frozen=True)
class Thresholds:
    """What a canary step must show to pass (from the pipeline's analysis)."""

    max_error_rate: float
    max_p99_ms: float | None
    min_requests: int


def _last(listed: str) -> str:
    """The last of nginx's comma-separated per-attempt values ("a, b" -> "b")."""
    return listed.rsplit(",", 1)[-1].strip()


def parse_line(line: str, upstream_ports: int | Collection[int]) -> Outcome | None:
    """The outcome of one access-log line if the slot on one of `upstream_ports` answered it (else None)."""
    return _parse(line, _port_names(upstream_ports))


def _port_names(upstream_ports: int | Collection[int]) -> frozenset[str]:
    """The ports as nginx writes them after the colon of `upstream`."""
    return frozenset({str(upstream_ports)} if isinstance(upstream_ports, int) else map(str, upstream_ports))


def _parse(line: str, ports: frozenset[str]) -> Outcome | None:
    try:
        entry = json.loads(line)
        if entry["uri"].startswith("/_router/") or _last(entry["upstream"]).rpartition(":")[2] not in ports:
            return None
        status = _last(entry["upstream_status"])  # "-" if the slot sent no answer
        seconds = _last(entry["urt"])
        return Outcome(status=int(status) if status.isdigit() else int(entry["status"]),
                       latency_ms=round(1000 * _number(seconds, float(entry["rt"])), 3))  # nginx: 1 ms steps
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not one of our lines (hand-written, or from another log format)


def _number(text: str, fallback: float) -> float:
    try:
        return float(text)
    except ValueError:
        return fallback


def read_outcomes(path: Path, offset: int, upstream_ports: int | Collection[int]) -> tuple[list[Outcome], int]:
    """The slot's outcomes (its port, or the ports of its replicas) among the complete lines appended to `path`
    since byte `offset`, and the new offset.

    A line nginx is still writing stays for the next read. A log shorter than `offset` was
    replaced, and is read from its start.
    """
    try:
        with open(path, "rb") as log:
            if log.seek(0, 2) < offset:
                offset = 0
            log.seek(offset)
            data = log.read()
    except FileNotFoundError:
        return [], 0
    complete = data[: data.rfind(b"\n") + 1]
    ports = _port_names(upstream_ports)  # once per read, not once per line
    outcomes = [_parse(line, ports) for line in complete.decode(errors="replace").splitlines()]
    return [outcome for outcome in outcomes if outcome is not None], offset + len(complete)


def summarise(outcomes: list[Outcome]) -> Figures:
    """Counts, error rate (status >= 500) and nearest-rank latency percentiles; zeros for no requests."""
    latencies = sorted(outcome.latency_ms for outcome in outcomes)
    errors = sum(1 for outcome in outcomes if outcome.status >= 500)
    return Figures(
        requests=len(outcomes), errors=errors, error_rate=errors / len(outcomes) if outcomes else 0.0,
        p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95), p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else 0.0,
    )


def judge(figures: Figures, thresholds: Thresholds) -> str | None:
    """None if the figures pass; else why not, in one line (too few requests is never a pass)."""
    if figures.requests < thresholds.min_requests:
        return (f"only {figures.requests} request{'' if figures.requests == 1 else 's'} reached the canary "
                f"(at least {thresholds.min_requests} needed)")
    if figures.error_rate > thresholds.max_error_rate:
        return (f"error rate {figures.error_rate:.1%} ({figures.errors} of {figures.requests} requests) "
                f"is above {thresholds.max_error_rate:.1%}")
    if thresholds.max_p99_ms is not None and figures.p99_ms > thresholds.max_p99_ms:
        return f"p99 latency {figures.p99_ms:.0f} ms is above {thresholds.max_p99_ms:.0f} ms"
    return None
