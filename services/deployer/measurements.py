"""Canary analysis from metrics: PromQL measurements against Prometheus, and what they add up to.

Each of a step's metrics is measured `count` times, one every `interval` from the step's start: the
query (its `{{service}}`, `{{env}}`, `{{lane}}`, `{{version}}` filled in) must return one number, and
`success` (`result < 0.05`) says whether it passed. Prometheus unreachable or slow, an error answer, no
series, several series or NaN make a measurement inconclusive: never a pass. The deployer also tells
Prometheus where the lanes' apps serve (file-based service discovery, `targets/`).
"""

import json
import math
import operator
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from shared.contracts.pipeline import Metric, success_condition

COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
           "!=": operator.ne}


@dataclass(frozen=True)
class Measurement:
    """One measurement of a metric: its value (None when there was none) and verdict."""

    metric: str
    verdict: str
    """passed, failed or inconclusive"""
    value: float | None = None
    detail: str = ""

    def as_json(self) -> dict:
        return asdict(self)


def fill(query: str, labels: dict[str, str]) -> str:
    """The query with `{{name}}` replaced by the label's value (names and versions are validated: no quotes)."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda found: labels[found.group(1)], query)


def passes(success: str, value: float) -> bool:
    """Whether `value` meets `result < 0.05` (the condition was validated with the pipeline)."""
    op, number = success_condition(success)
    return COMPARE[op](value, number)


def taken(measurements: Sequence[dict], metric: str) -> list[dict]:
    return [m for m in measurements if m["metric"] == metric]


def due(metrics: Sequence[Metric], measurements: Sequence[dict], elapsed: float) -> list[Metric]:
    """The metrics whose next measurement is due `elapsed` s into the step."""
    return [metric for metric in metrics if (n := len(taken(measurements, metric.name))) < metric.count
            and elapsed >= metric.initial_delay + (n + 1) * metric.interval]


def next_due(metrics: Sequence[Metric], measurements: Sequence[dict], elapsed: float) -> float | None:
    """Seconds until the next measurement of any metric (None: every metric has all its measurements)."""
    waits = [metric.initial_delay + (n + 1) * metric.interval - elapsed for metric in metrics
             if (n := len(taken(measurements, metric.name))) < metric.count]
    return max(0.0, min(waits)) if waits else None


def outcome(metric: Metric, measurements: Sequence[dict]) -> tuple[str | None, str]:
    """("failed" | "inconclusive" | "passed" | None while measuring, a summary) of one metric's measurements."""
    mine = taken(measurements, metric.name)
    failed = [m for m in mine if m["verdict"] == "failed"]
    unknown = [m for m in mine if m["verdict"] == "inconclusive"]
    last = mine[-1] if mine else None
    said = (f"{len(mine) - len(failed) - len(unknown)} of {len(mine)} passed ({metric.success}"
            + (f"; last {last['value']:.4g}" if last and last["value"] is not None else "") + ")")
    if len(failed) > metric.failure_limit:
        return "failed", f"metric {metric.name}: {len(failed)} of {len(mine)} measurements failed " \
                         f"({metric.success}; last {failed[-1]['value']:.4g})"
    if len(unknown) > metric.inconclusive_limit:
        return "inconclusive", f"metric {metric.name} inconclusive: {unknown[-1]['detail']}"
    if len(mine) >= metric.count:
        return "passed", said
    return None, said


async def measure(client: httpx.AsyncClient, base_url: str, metric: Metric, labels: dict[str, str]) -> Measurement:
    """Run the metric's query once (GET /api/v1/query); never raises."""
    try:
        response = await client.get(f"{base_url}/api/v1/query", params={"query": fill(metric.query, labels)})
        answer = response.json()
    except (httpx.HTTPError, ValueError) as error:
        return Measurement(metric.name, "inconclusive", detail=f"Prometheus at {base_url} did not answer "
                                                               f"({type(error).__name__})")
    if not isinstance(answer, dict) or answer.get("status") != "success":
        error = answer.get("error", "no status") if isinstance(answer, dict) else "not an object"
        return Measurement(metric.name, "inconclusive", detail=f"Prometheus refused the query: {str(error)[:200]}")
    value, problem = _one_number(answer.get("data"))
    if value is None:
        return Measurement(metric.name, "inconclusive", detail=problem)
    return Measurement(metric.name, "passed" if passes(metric.success, value) else "failed", value)


def _one_number(data) -> tuple[float | None, str]:
    """The one value of an instant query's answer, or (None, why not)."""
    try:
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            sample = result
        elif kind == "vector":
            if len(result) != 1:
                return None, ("no data: the query returned no series" if not result else
                              f"the query returned {len(result)} series, not one")
            sample = result[0]["value"]
        else:
            return None, f"the query returned a {kind}, not a number"
        value = float(sample[1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None, "Prometheus's answer was not an instant query result"
    if not math.isfinite(value):
        return None, f"the query returned {value} (no requests to divide by?)"
    return value, ""


def write_targets(directory: Path, service: str, env: str, lane: str, version: str, ports: Sequence[int]) -> None:
    """Tell Prometheus where a lane's app serves (one file per lane; replaced atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{service}--{env}--{lane}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}" for port in ports],
                                      "labels": {"service": service, "env": env, "lane": lane,
                                                 "version": version}}]))
    os.chmod(temporary, 0o644)
    temporary.replace(path)
