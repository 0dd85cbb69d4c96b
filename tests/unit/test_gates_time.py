"""Unit tests for the time gates' rules: soak, change windows (DST, overnight, freezes) and the wake-up time."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gates.domain import Facts, Release, evaluate, soak_ends, soak_remaining
from services.gates.windows import describe, in_window, next_opening, openings, window_problem
from shared.contracts.pipeline import ChangeWindowGate, Freeze, SoakGate, parse_pipeline
from shared.contracts.time_gates import WEEKDAYS

PARIS = ZoneInfo("Europe/Paris")
DIGEST = "sha256:" + "a" * 64
OFFICE = ChangeWindowGate(days=("mon", "tue", "wed", "thu", "fri"), start=time(9), end=time(17),
                          timezone="Europe/Paris")
YEAR_END = Freeze(start=datetime.fromisoformat("2026-12-20T00:00:00+01:00"),
                  until=datetime.fromisoformat("2027-01-04T00:00:00+01:00"), reason="year-end freeze")


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# 2026-11-26 is a Thursday; 2026-03-29 and 2026-10-25 are Paris's DST Sundays.
OPEN_AT = [  # (window, instant, open?)
    pytest.param(OFFICE, paris(2026, 11, 26, 10), True, id="a weekday morning is inside office hours"),
    pytest.param(OFFICE, paris(2026, 11, 26, 9), True, id="the window opens at start, included"),
    pytest.param(OFFICE, paris(2026, 11, 26, 17), False, id="the window closes at end, excluded"),
    pytest.param(OFFICE, paris(2026, 11, 26, 16, 59, 59), True, id="one second before the end is inside"),
    pytest.param(OFFICE, paris(2026, 11, 28, 10), False, id="a saturday is outside a mon-fri window"),
    pytest.param(OFFICE, utc(2026, 11, 26, 8, 30), True, id="instants compare in the window's timezone"),
    pytest.param(OFFICE, utc(2026, 6, 1, 7, 30), True, id="summer time shifts the window in UTC"),
    pytest.param(OFFICE, utc(2026, 12, 1, 7, 30), False, id="winter time does not"),
    pytest.param(ChangeWindowGate(days=("fri",), start=time(22), end=time(2)), utc(2026, 11, 28, 1), True,
                 id="an overnight window runs into the next day"),
    pytest.param(ChangeWindowGate(days=("fri",), start=time(22), end=time(2)), utc(2026, 11, 27, 1), False,
                 id="an overnight window belongs to the day it opens"),
    pytest.param(ChangeWindowGate(days=("sun",)), utc(2026, 11, 29, 23, 59), True,
                 id="start equal to end is the whole day"),
    pytest.param(ChangeWindowGate(days=("sun",)), utc(2026, 11, 30, 0, 0), False,
                 id="the whole day ends at the next midnight"),
    pytest.param(ChangeWindowGate(freezes=(YEAR_END,)), utc(2026, 12, 25), False, id="a freeze closes the window"),
    pytest.param(ChangeWindowGate(freezes=(YEAR_END,)), paris(2027, 1, 4), True, id="a freeze ends at until, excluded"),
    pytest.param(ChangeWindowGate(freezes=(YEAR_END,)), paris(2026, 12, 20), False,
                 id="a freeze starts at from, included"),
    pytest.param(ChangeWindowGate(timezone="Europe/Paris", freezes=(
        Freeze(start=datetime(2026, 5, 1), until=datetime(2026, 5, 2)),)), utc(2026, 4, 30, 22, 30), False,
        id="a freeze without an offset is in the window's timezone"),
]


@pytest.mark.parametrize(("window", "instant", "expected"), OPEN_AT)
def test_whether_the_window_is_open_at_an_instant(window, instant, expected):
    assert in_window(window, instant) is expected


NEXT = [  # (window, now, next opening)
    pytest.param(OFFICE, paris(2026, 11, 26, 10), paris(2026, 11, 26, 10), id="inside: now"),
    pytest.param(OFFICE, paris(2026, 11, 26, 18), paris(2026, 11, 27, 9), id="a weekday evening: next morning"),
    pytest.param(OFFICE, paris(2026, 11, 27, 17), paris(2026, 11, 30, 9), id="friday at closing: monday"),
    pytest.param(OFFICE, paris(2026, 11, 26, 7), paris(2026, 11, 26, 9), id="early morning: the same day"),
    pytest.param(ChangeWindowGate(days=("fri",), start=time(22), end=time(2)), utc(2026, 11, 28, 3),
                 utc(2026, 12, 4, 22), id="after an overnight window: the next week's"),
    pytest.param(ChangeWindowGate(start=time(2, 30), end=time(4), timezone="Europe/Paris"), paris(2026, 3, 29, 1),
                 utc(2026, 3, 29, 1, 30), id="a start that DST skips opens at the same instant an hour later"),
    pytest.param(ChangeWindowGate(start=time(2, 30), end=time(4), timezone="Europe/Paris"),
                 utc(2026, 10, 24, 23), utc(2026, 10, 25, 0, 30), id="a start that DST repeats opens the first time"),
    pytest.param(OFFICE, utc(2026, 3, 27, 16, 30), utc(2026, 3, 30, 7),
                 id="across the spring change, 09:00 moves an hour earlier in UTC"),
    pytest.param(OFFICE.model_copy(update={"freezes": (YEAR_END,)}), paris(2026, 12, 22, 10), paris(2027, 1, 4, 9),
                 id="a freeze ending at midnight: that morning"),
    pytest.param(ChangeWindowGate(freezes=(YEAR_END,)), paris(2026, 12, 22, 10), paris(2027, 1, 4),
                 id="a freeze ending inside the window: its end"),
    pytest.param(ChangeWindowGate(freezes=(
        Freeze(start=utc(2026, 1, 1), until=utc(2026, 1, 3)), Freeze(start=utc(2026, 1, 2), until=utc(2026, 1, 5)),
        Freeze(start=utc(2026, 1, 5), until=utc(2026, 1, 6)))), utc(2026, 1, 1, 12), utc(2026, 1, 6),
        id="overlapping and back-to-back freezes chain"),
]


@pytest.mark.parametrize(("window", "now", "expected"), NEXT)
def test_the_next_opening(window, now, expected):
    assert next_opening(window, now) == expected


def test_the_reason_outside_the_window_names_the_window_and_its_next_opening():
    assert window_problem(OFFICE, paris(2026, 11, 26, 18)) == (
        "outside the change window (mon-fri 09:00-17:00 Europe/Paris); opens 2026-11-27T09:00:00+01:00",
        paris(2026, 11, 27, 9))


def test_the_reason_inside_a_freeze_names_its_end_its_reason_and_the_next_opening():
    frozen_office = OFFICE.model_copy(update={"freezes": (YEAR_END,)})
    assert window_problem(frozen_office, paris(2026, 12, 22, 10)) == (
        "frozen until 2027-01-04T00:00:00+01:00: year-end freeze; opens 2027-01-04T09:00:00+01:00",
        paris(2027, 1, 4, 9))
    assert window_problem(ChangeWindowGate(timezone="Europe/Paris", freezes=(YEAR_END,)),
                          paris(2026, 12, 22, 10)) == (
        "frozen until 2027-01-04T00:00:00+01:00: year-end freeze", paris(2027, 1, 4))


def test_an_open_window_has_no_reason_and_no_wake_up():
    assert window_problem(OFFICE, paris(2026, 11, 26, 10)) == (None, None)


@pytest.mark.parametrize(("days", "shown"), [
    (WEEKDAYS, "daily"), (("mon", "tue", "wed", "thu", "fri"), "mon-fri"), (("sat", "sun"), "sat,sun"),
    (("mon", "wed", "thu", "fri"), "mon,wed-fri")])
def test_a_window_is_described_in_a_few_words(days, shown):
    assert describe(ChangeWindowGate(days=days, start=time(9), end=time(17, 0, 30))) == f"{shown} 09:00-17:00:30 UTC"
    assert describe(ChangeWindowGate(days=days)) == f"{shown} all day UTC"


def test_the_spring_change_shortens_a_night_window_and_the_autumn_change_lengthens_it():
    night = ChangeWindowGate(start=time(1), end=time(5), timezone="Europe/Paris")
    spring = next(openings(night, utc(2026, 3, 29, 0, 30)))
    autumn = next(openings(night, utc(2026, 10, 24, 23, 30)))
    assert spring[1] - spring[0] == timedelta(hours=3)
    assert autumn[1] - autumn[0] == timedelta(hours=5)


# --- soak and the verdict -----------------------------------------------------------------------

PIPELINE = parse_pipeline("""\
service: payments
environments:
  - name: staging
  - name: prod
    gates:
      - {soak: 10m}
      - change_window: {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00", timezone: Europe/Paris}
      - {approval: {min: 1}}
""")
VERIFIED = paris(2026, 11, 26, 10)  # a Thursday, inside the window


def facts(verified_at=VERIFIED, approvals=None, released_here=False) -> Facts:
    return Facts(pipeline=PIPELINE, release=Release("payments", "1.0.0", DIGEST, "alice"),
                 verified_at={"staging": verified_at} if verified_at else {},
                 approvals=approvals or {}, released_here=released_here)


def test_a_soak_ends_its_duration_after_the_verification():
    gate = SoakGate(seconds=600)
    assert soak_ends(VERIFIED, gate) == paris(2026, 11, 26, 10, 10)
    assert soak_remaining(VERIFIED, gate, paris(2026, 11, 26, 10, 4)) == timedelta(minutes=6)
    assert soak_remaining(VERIFIED, gate, paris(2026, 11, 26, 11)) == timedelta(0)


def test_a_release_still_soaking_waits_with_the_soak_end_as_its_wake_up():
    verdict = evaluate("prod", DIGEST, facts(approvals={"bob": "granted"}), VERIFIED + timedelta(minutes=3))
    assert verdict.outcome == "pending"
    assert verdict.reasons == ("soaking in staging for 10m, until 2026-11-26T09:10:00+00:00",)
    assert verdict.wake_at == paris(2026, 11, 26, 10, 10)


def test_the_soak_end_is_shown_rounded_up_to_the_second():
    verdict = evaluate("prod", DIGEST, facts(VERIFIED + timedelta(microseconds=1), {"bob": "granted"}), VERIFIED)
    assert verdict.reasons == ("soaking in staging for 10m, until 2026-11-26T09:10:01+00:00",)


def test_a_release_that_has_soaked_inside_the_window_with_an_approval_passes():
    verdict = evaluate("prod", DIGEST, facts(approvals={"bob": "granted"}), VERIFIED + timedelta(minutes=10))
    assert (verdict.outcome, verdict.reasons, verdict.wake_at) == ("passed", (), None)


def test_every_gate_that_holds_the_release_gives_its_reason_and_the_earliest_time_gate_wakes_it():
    verdict = evaluate("prod", DIGEST, facts(verified_at=paris(2026, 11, 26, 16, 55)), paris(2026, 11, 26, 17, 1))
    assert verdict.outcome == "pending"
    assert verdict.reasons == (
        "soaking in staging for 10m, until 2026-11-26T16:05:00+00:00",
        "outside the change window (mon-fri 09:00-17:00 Europe/Paris); opens 2026-11-27T09:00:00+01:00",
        "waiting for 1 approval(s) (not by the author, alice)")
    assert verdict.wake_at == paris(2026, 11, 26, 17, 5)


def test_a_release_held_only_by_an_approval_has_no_wake_up():
    verdict = evaluate("prod", DIGEST, facts(), VERIFIED + timedelta(hours=1))
    assert (verdict.outcome, verdict.wake_at) == ("pending", None)


def test_a_rejection_fails_even_outside_the_window_and_sets_no_timer():
    verdict = evaluate("prod", DIGEST, facts(approvals={"bob": "rejected"}), paris(2026, 11, 28, 12))
    assert (verdict.outcome, verdict.reasons, verdict.wake_at) == ("failed", ("rejected by bob",), None)


def test_time_gates_are_judged_only_once_the_previous_environment_has_verified_the_release():
    verdict = evaluate("prod", DIGEST, facts(verified_at=None), paris(2026, 11, 28, 12))
    assert (verdict.outcome, verdict.reasons, verdict.wake_at) == ("pending", ("not yet verified in staging",), None)


def test_a_release_already_verified_in_the_environment_passes_whatever_the_clock_says():
    verdict = evaluate("prod", DIGEST, facts(released_here=True), paris(2026, 11, 28, 12))
    assert verdict.outcome == "passed"


# --- properties -----------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham"]
clocks = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 59]), st.sampled_from([0, 0, 30]))
instants = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1)).map(
    lambda naive: naive.replace(tzinfo=UTC))


@st.composite
def windows(draw, zones=st.sampled_from(ZONES)) -> ChangeWindowGate:
    freezes = []
    for start in draw(st.lists(instants, max_size=3)):
        freezes.append(Freeze(start=start, until=start + draw(st.timedeltas(timedelta(minutes=1), timedelta(days=20)))))
    return ChangeWindowGate(days=tuple(draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1))), start=draw(clocks),
                            end=draw(clocks), timezone=draw(zones), freezes=tuple(freezes))


@settings(max_examples=300, deadline=None)
@given(windows(), instants)
def test_the_next_opening_is_open_and_nothing_between_now_and_it_is(window, now):
    opening = next_opening(window, now)
    assert opening >= now and in_window(window, opening)
    if in_window(window, now):
        assert opening == now
    # Openness only changes where a window opens or a freeze ends: check every such instant before it.
    changes = [opens for opens, _ in _until(openings(window, now), opening)]
    changes += [freeze.until for freeze in window.freezes]
    assert not any(in_window(window, instant) for instant in changes + [now] if now <= instant < opening)
    assert opening == now or not in_window(window, opening - timedelta(microseconds=1))


@settings(max_examples=300, deadline=None)
@given(windows(zones=st.just("UTC")), instants)
def test_in_utc_a_window_is_its_days_and_hours(window, now):
    day, yesterday, clock = WEEKDAYS[now.weekday()], WEEKDAYS[(now.weekday() - 1) % 7], now.time()
    if window.end > window.start:
        open_ = day in window.days and window.start <= clock < window.end
    else:
        open_ = (day in window.days and clock >= window.start) or (yesterday in window.days and clock < window.end)
    frozen = any(freeze.start <= now < freeze.until for freeze in window.freezes)
    assert in_window(window, now) is (open_ and not frozen)


def _until(intervals, end):
    for interval in intervals:
        if interval[0] > end:
            return
        yield interval


# --- ids of the events a timer emits ----------------------------------------------------------

def test_a_timer_emits_ids_derived_from_what_was_due_and_when_and_once_per_ids_as_a_handler_does():
    from shared.contracts.events import GatePassed, GatePending, new_event
    from shared.platform.runtime import ServiceRuntime

    runtime = ServiceRuntime("gates")
    pending = GatePending(service="payments", version="1.0.0", digest=DIGEST, env="prod", reasons=["r"])
    key = "timer/payments/1.0.0/prod/2026-11-26T09:10:00+00:00"
    assert runtime.timed_event(pending, key).id == runtime.timed_event(pending, key).id
    assert runtime.timed_event(pending, key).id != runtime.timed_event(pending, key.replace("09:10", "09:11")).id
    passed = GatePassed(service="payments", version="1.0.0", digest=DIGEST, env="prod", strategy="rolling",
                        config={}, config_version=DIGEST, pipeline_version=DIGEST)
    cause = new_event(pending, source="/tests")
    assert runtime.timed_event(passed, key).id == runtime.event(passed, cause).id
