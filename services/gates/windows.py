"""Change windows over time, pure: is a window open at an instant, and when does it open next.

A window opens on each of its days at `start` (local time in its timezone) and closes at
`end` the same day, or the next day when `end` is at or before `start`. A wall-clock time
that a DST change skips is read with the offset in force before the change (02:30 on the
spring-forward night is 03:30 summer time); one that occurs twice, at its first occurrence.
Freezes close the window from `from` (included) until `until` (excluded). Every instant
returned is timezone-aware; compare them, never their wall-clock fields.
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.contracts.time_gates import WEEKDAYS, ChangeWindowGate, Freeze, format_clock

Interval = tuple[datetime, datetime]
"""[opens, closes) in UTC."""


def _at(day: date, clock: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


def _aware(instant: datetime, zone: ZoneInfo) -> datetime:
    """A freeze bound written without an offset is in the window's timezone."""
    return (instant if instant.tzinfo else instant.replace(tzinfo=zone)).astimezone(UTC)


def openings(window: ChangeWindowGate, instant: datetime) -> Iterator[Interval]:
    """The window's daily intervals in time order, from the first one that ends after `instant`."""
    zone = window.zone
    day = instant.astimezone(zone).date() - timedelta(days=1)  # yesterday's overnight window may still run
    overnight = window.end <= window.start
    while True:
        if WEEKDAYS[day.weekday()] in window.days:
            opens = _at(day, window.start, zone)
            closes = _at(day + timedelta(days=1) if overnight else day, window.end, zone)
            if opens < closes and closes > instant:
                yield opens, closes
        day += timedelta(days=1)


def freeze_at(window: ChangeWindowGate, instant: datetime) -> tuple[Freeze, datetime] | None:
    """(the freeze in force at `instant`, when it ends), the latest-ending one if several overlap."""
    zone = window.zone
    found = [(freeze, _aware(freeze.until, zone)) for freeze in window.freezes
             if _aware(freeze.start, zone) <= instant < _aware(freeze.until, zone)]
    return max(found, key=lambda pair: pair[1]) if found else None


def in_window(window: ChangeWindowGate, instant: datetime) -> bool:
    """The window is open at `instant` and no freeze is in force."""
    opens, _ = next(openings(window, instant))
    return opens <= instant and freeze_at(window, instant) is None


def next_opening(window: ChangeWindowGate, instant: datetime) -> datetime:
    """The earliest moment at or after `instant` at which the window is open and not frozen."""
    moment = instant
    for _ in range(len(window.freezes) + 1):  # each round either answers or leaves one freeze behind for good
        opens, _ = next(openings(window, moment))
        moment = max(opens, moment)
        frozen = freeze_at(window, moment)
        if frozen is None:
            return moment
        moment = frozen[1]
    raise AssertionError("unreachable: every freeze ends")


def describe(window: ChangeWindowGate) -> str:
    """The window in a few words: "mon-fri 09:00-17:00 Europe/Paris"."""
    hours = "all day" if window.start == window.end else f"{format_clock(window.start)}-{format_clock(window.end)}"
    return f"{_days(window.days)} {hours} {window.timezone}"


def _days(days: tuple[str, ...]) -> str:
    if len(days) == 7:
        return "daily"
    runs: list[list[str]] = []
    for day in days:  # in week order: consecutive days form a run
        if runs and WEEKDAYS.index(day) == WEEKDAYS.index(runs[-1][-1]) + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(run) for run in runs)


def window_problem(window: ChangeWindowGate, now: datetime) -> tuple[str | None, datetime | None]:
    """(why the window keeps the release out now, when it opens), or (None, None) while it is open."""
    if in_window(window, now):
        return None, None
    opening = next_opening(window, now)
    shown = opening.astimezone(window.zone).isoformat()
    frozen = freeze_at(window, now)
    if frozen is None:
        return f"outside the change window ({describe(window)}); opens {shown}", opening
    freeze, until = frozen
    reason = f"frozen until {until.astimezone(window.zone).isoformat()}"
    if freeze.reason:
        reason += f": {freeze.reason}"
    if opening != until:
        reason += f"; opens {shown}"
    return reason, opening
