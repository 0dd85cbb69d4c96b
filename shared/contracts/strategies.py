"""Rollout strategies of a pipeline's environments: rolling, blue/green, and canaries with their analysis (the
router's access log and PromQL metrics, in the shape of Argo Rollouts' analysis templates). Split out of
shared/contracts/pipeline.py along its seam, as the time and trust gates are; shared.contracts.pipeline
re-exports every name."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PlainSerializer,
                      StringConstraints, Tag, field_validator, model_serializer, model_validator)

from shared.contracts.time_gates import format_duration, parse_duration

STRATEGIES = ("rolling", "blue_green", "canary")

def _duration(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return parse_duration(value)


Duration = Annotated[int, BeforeValidator(_duration), PlainSerializer(format_duration)]
"""A duration written "30s", "10m", "2h", "1h30m" or "1d"; whole seconds in code; its shortest form in a dump."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BlueGreen(_Frozen):
    """The release starts in the idle slot, is verified on its own port, then takes all traffic at once.

    The previous slot stays warm for `retire_after`, so that a rollback is a switch back.
    """

    retire_after: Duration = 600

    @model_validator(mode="before")
    @classmethod
    def _from_pipeline_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"blue_green"}:
            return {} if data["blue_green"] is None else data["blue_green"]
        return data

    @model_serializer
    def _to_pipeline_form(self) -> dict[str, Any]:
        return {"blue_green": {"retire_after": format_duration(self.retire_after)}}


SUCCESS_CONDITION = re.compile(r"^\s*result\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$")
"""A metric's success condition: `result` compared with a number (`result < 0.05`); nothing else is evaluated."""
QUERY_PLACEHOLDERS = ("service", "env", "lane", "version")


def success_condition(text: str) -> tuple[str, float]:
    """(operator, number) of `result < 0.05`; ValueError otherwise."""
    found = SUCCESS_CONDITION.match(text)
    if found is None:
        raise ValueError(f"success {text!r}: write `result` compared with a number, e.g. \"result < 0.05\" "
                         "(<, <=, >, >=, ==, !=)")
    return found.group(1), float(found.group(2))


def _placeholders_known(query: str) -> str:
    unknown = sorted(set(re.findall(r"\{\{\s*([^}]*?)\s*\}\}", query)) - set(QUERY_PLACEHOLDERS))
    if unknown:
        raise ValueError(f"query: unknown placeholder {{{{{unknown[0]}}}}} (known: "
                         f"{', '.join('{{' + name + '}}' for name in QUERY_PLACEHOLDERS)})")
    return query


class Metric(_Frozen):
    """A PromQL measurement taken during each canary step, in the shape of Argo Rollouts' analysis templates:
    `count` measurements, one every `interval` after `initial_delay` (Argo's initialDelay: a new lane's app is
    discovered and scraped a few seconds after it starts); more than `failure_limit` failed ones fail the step,
    more than `inconclusive_limit` inconclusive ones (Prometheus unreachable, no data, not a number) make it inconclusive.
    The query's `{{service}}`, `{{env}}`, `{{lane}}` (the canary's) and `{{version}}` are filled in."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,39}$")]
    query: Annotated[str, StringConstraints(min_length=1, max_length=2000), AfterValidator(_placeholders_known)]
    success: Annotated[str, StringConstraints(max_length=100)]
    interval: Duration = 5
    initial_delay: Duration = 0
    count: int = Field(3, ge=1, le=100, strict=True)
    failure_limit: int = Field(0, ge=0, le=100, strict=True)
    inconclusive_limit: int = Field(0, ge=0, le=100, strict=True)

    @field_validator("success")
    @classmethod
    def _a_comparison(cls, text: str) -> str:
        success_condition(text)
        return text

    @field_validator("interval")
    @classmethod
    def _at_least_a_second(cls, interval: int) -> int:
        if interval < 1:
            raise ValueError("interval: at least 1s")
        return interval


class Analysis(_Frozen):
    """What a canary step must show, judged on the canary's own requests at the router (and, with `metrics`,
    on PromQL measurements)."""

    interval: Duration = 10
    """How long each step collects requests before it is judged."""
    min_requests: int = Field(20, ge=1, strict=True)
    """Fewer canary requests than this within `max_wait` fails the step (no evidence is not a pass)."""
    max_error_rate: float = Field(0.05, ge=0, le=1)
    """Share of 5xx answers allowed."""
    max_p99_ms: float | None = Field(None, gt=0)
    max_wait: Duration = 60
    metrics: tuple[Metric, ...] = Field((), max_length=10)
    on_inconclusive: Literal["pause", "abort"] = "pause"
    """An inconclusive metric pauses the canary for an operator (`promote canary …`), or aborts it."""

    @field_validator("metrics")
    @classmethod
    def _named_once(cls, metrics: tuple[Metric, ...]) -> tuple[Metric, ...]:
        names = [metric.name for metric in metrics]
        if twice := next((name for name in names if names.count(name) > 1), None):
            raise ValueError(f"metric {twice!r} is named twice")
        return metrics


class Canary(_Frozen):
    """Traffic moves to the release in `steps` (percentages ending at 100), with an analysis at each step."""

    steps: tuple[Annotated[int, Field(ge=1, le=100, strict=True)], ...] = (5, 50, 100)
    analysis: Analysis = Analysis()
    retire_after: Duration = 0

    @model_validator(mode="before")
    @classmethod
    def _from_pipeline_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"canary"}:
            return {} if data["canary"] is None else data["canary"]
        return data

    @field_validator("steps")
    @classmethod
    def _rising_to_100(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if not steps or steps[-1] != 100 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError("canary steps are rising percentages that end at 100, e.g. [5, 50, 100]")
        return steps

    @model_serializer
    def _to_pipeline_form(self) -> dict[str, Any]:
        analysis = self.analysis.model_dump(mode="json")
        if not analysis["metrics"]:  # as before metrics existed: an unchanged pipeline keeps its content hash
            del analysis["metrics"], analysis["on_inconclusive"]
        return {"canary": {"steps": list(self.steps), "analysis": analysis,
                           "retire_after": format_duration(self.retire_after)}}


def _strategy_shape(value: Any) -> Any:
    if isinstance(value, (str, BlueGreen, Canary)):
        if isinstance(value, str) and value != "rolling":
            raise ValueError(f"strategy {value!r} is not known (expected rolling, {{blue_green: {{...}}}} "
                             "or {canary: {...}})")
        return value
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in STRATEGIES[1:]:
        shown = next(iter(value)) if isinstance(value, dict) and len(value) == 1 else value
        raise ValueError(f"strategy {'null' if shown is None else repr(shown)} is not known "
                         f"(expected rolling, {{blue_green: {{...}}}} or {{canary: {{...}}}})")
    return value


def strategy_kind(value: Any) -> str:
    if isinstance(value, str):
        return "rolling"
    return next(iter(value)) if isinstance(value, dict) else next(iter(value.model_dump()))


Strategy = Annotated[Union[Annotated[Literal["rolling"], Tag("rolling")], Annotated[BlueGreen, Tag("blue_green")],
                           Annotated[Canary, Tag("canary")]],
                     Discriminator(strategy_kind), BeforeValidator(_strategy_shape)]
"""How a release enters an environment: `rolling` (stop, start), `{blue_green: …}` or `{canary: …}`."""
