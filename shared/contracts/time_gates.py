"""Time-based gates of a pipeline: a soak in the previous environment and a change window with freezes.

They are written, like every gate, as one-key mappings and dump back to the same form:
``{soak: 10m}`` and ``{change_window: {days: [mon, fri], start: "09:00", end: "17:00",
timezone: Europe/Paris, freezes: [{from: …, until: …, reason: …}]}}``. What they mean over
time (is a window open now, when does it open next) is decided in ``services.gates``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (BaseModel, ConfigDict, Field, field_serializer, field_validator, model_serializer,
                      model_validator)

__all__ = ["WEEKDAYS", "ChangeWindowGate", "Freeze", "SoakGate", "format_duration", "parse_duration"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names in `datetime.weekday()` order."""
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")


def parse_duration(text: str) -> int:
    """Seconds in a duration such as "30s", "10m", "2h", "1h30m" or "1d"; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration; write it like 30s, 10m, 2h or 1h30m")
    return sum(int(amount) * unit for amount, (_, unit) in zip(match.groups(), _UNITS) if amount)


def format_duration(seconds: int) -> str:
    """The shortest canonical form of a number of seconds: 5400 -> "1h30m" (0 -> "0s")."""
    parts = []
    for suffix, unit in _UNITS:
        amount, seconds = divmod(seconds, unit)
        if amount:
            parts.append(f"{amount}{suffix}")
    return "".join(parts) or "0s"


def format_clock(value: time) -> str:
    """"HH:MM", or "HH:MM:SS" when the seconds matter."""
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")


def _clock(value: Any) -> time:
    if isinstance(value, time):
        return value
    match = _CLOCK.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a time of day; write it as \"HH:MM\" or \"HH:MM:SS\" (00:00 to 23:59:59)")
    return time(int(match[1]), int(match[2]), int(match[3] or 0))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SoakGate(_Frozen):
    """Passes once the release has run, verified, in the previous environment for `seconds`."""

    seconds: int = Field(ge=1, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _from_pipeline_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"soak"}:
            if not isinstance(data["soak"], str):
                raise ValueError(f"a soak is a duration with a unit, e.g. {{soak: 10m}} or {{soak: 1h30m}}; "
                                 f"got {data['soak']!r}")
            seconds = parse_duration(data["soak"])
            if seconds == 0:
                raise ValueError("a soak of zero waits for nothing; give at least 1s (or remove the gate)")
            return {"seconds": seconds}
        return data

    @model_serializer
    def _to_pipeline_form(self) -> dict[str, Any]:
        return {"soak": format_duration(self.seconds)}


class Freeze(_Frozen):
    """No promotion enters the environment from `from` (included) until `until` (excluded).

    A time without a UTC offset is read in the change window's timezone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    start: datetime = Field(alias="from")
    until: datetime
    reason: str | None = Field(None, min_length=1)

    @field_validator("start", "until", mode="before")
    @classmethod
    def _plain_datetime(cls, value: Any) -> Any:
        if isinstance(value, datetime):  # YAML timestamps arrive as a datetime subclass: keep only the value
            return datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                            value.microsecond, tzinfo=value.tzinfo)
        if isinstance(value, date):  # a bare date is its midnight
            return datetime.combine(value, time())
        try:
            return datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a date and time; write it like 2026-12-20T00:00:00+01:00 "
                             "(or 2026-12-20)") from None

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if (self.start.tzinfo is None) != (self.until.tzinfo is None):
            raise ValueError("give 'from' and 'until' both with a UTC offset or both without one")
        if self.until <= self.start:
            raise ValueError(f"a freeze ends after it starts; 'until' {self.until.isoformat()} is not after "
                             f"'from' {self.start.isoformat()}")
        return self

    @model_serializer
    def _to_pipeline_form(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "until": self.until.isoformat(), "reason": self.reason}


class ChangeWindowGate(_Frozen):
    """Passes only inside the window (on `days`, from `start` to `end` in `timezone`) and outside every freeze.

    An `end` at or before `start` ends on the next day (an overnight window); `days` are the
    days a window opens. Omitted: every day, 00:00 to 00:00 (always open but for freezes), UTC.
    """

    days: tuple[Weekday, ...] = WEEKDAYS
    start: time = time(0, 0)
    end: time = time(0, 0)
    timezone: str = "UTC"
    freezes: tuple[Freeze, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_pipeline_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"change_window"}:
            if not isinstance(body := {} if data["change_window"] is None else data["change_window"], dict):
                raise ValueError("a change window is a mapping, e.g. {change_window: {days: [mon, tue, wed, thu, "
                                 "fri], start: \"09:00\", end: \"17:00\", timezone: Europe/Paris}}")
            return body
        return data

    @field_validator("days")
    @classmethod
    def _some_days(cls, days: tuple[str, ...]) -> tuple[str, ...]:
        if not days:
            raise ValueError("a change window needs at least one day (omit 'days' for every day)")
        return tuple(day for day in WEEKDAYS if day in days)  # week order, each day once

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time_of_day(cls, value: Any) -> time:
        return _clock(value)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown timezone {value!r}; use an IANA name such as Europe/Paris or UTC") from None
        return value

    @field_serializer("start", "end")
    def _clock_form(self, value: time) -> str:
        return format_clock(value)

    @model_serializer(mode="wrap")
    def _to_pipeline_form(self, handler: Any) -> dict[str, Any]:
        body = handler(self)
        body["days"] = list(body["days"])
        body["freezes"] = [freeze.model_dump() for freeze in self.freezes]
        return {"change_window": body}

    @property
    def zone(self) -> ZoneInfo:
        """The window's timezone."""
        return ZoneInfo(self.timezone)
