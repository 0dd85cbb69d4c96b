"""Unit tests for the time-based gates of a pipeline: {soak: DURATION} and {change_window: {...}}."""

from datetime import UTC, datetime, time, timedelta, timezone

import pytest

from shared.contracts.pipeline import (ChangeWindowGate, Freeze, PipelineDefinition, PipelineError, Problem, SoakGate,
                             parse_pipeline)
from shared.contracts.time_gates import format_duration, parse_duration

HEADER = "service: payments\nenvironments:\n  - name: dev\n  - name: prod\n"  # prod's keys start on line 5
PARIS = timezone(timedelta(hours=1))
FULL = HEADER + """\
    gates:
      - {soak: 1h30m}
      - change_window:
          days: [fri, mon, tue, wed, thu]
          start: "09:00"
          end: "17:00:30"
          timezone: Europe/Paris
          freezes:
            - {from: 2026-12-20T00:00:00+01:00, until: "2027-01-04T00:00:00+01:00", reason: year-end freeze}
            - {from: 2026-05-01, until: 2026-05-02}
"""


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, "pipeline.yaml")
    return caught.value.problems


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200), ("1h30m", 5400),
                                               ("1d", 86400), ("1h0m5s", 3605), ("90m", 5400), (" 4s ", 4)])
def test_a_duration_is_read_in_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "10 minutes", "m", "1.5h", "30m1h", "-5s", "10M", "1h 30m"])
def test_anything_else_is_not_a_duration(text):
    with pytest.raises(ValueError, match="is not a duration; write it like 30s, 10m, 2h or 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(30, "30s"), (600, "10m"), (5400, "1h30m"), (86400 + 5, "1d5s"),
                                               (0, "0s")])
def test_a_duration_is_shown_in_its_shortest_form(seconds, text):
    assert format_duration(seconds) == text


def test_both_time_gates_parse_with_their_values():
    soak, window = parse_pipeline(FULL).environment("prod").gates
    assert soak == SoakGate(seconds=5400)
    assert window == ChangeWindowGate(
        days=("mon", "tue", "wed", "thu", "fri"), start=time(9), end=time(17, 0, 30), timezone="Europe/Paris",
        freezes=(Freeze(start=datetime(2026, 12, 20, tzinfo=PARIS), until=datetime(2027, 1, 4, tzinfo=PARIS),
                        reason="year-end freeze"),
                 Freeze(start=datetime(2026, 5, 1), until=datetime(2026, 5, 2))))


def test_a_change_window_defaults_to_every_day_all_day_in_utc():
    for body in ("{}", "", "{freezes: []}"):
        (window,) = parse_pipeline(HEADER + f"    gates: [{{change_window: {body}}}]\n").environment("prod").gates
        assert (window.days, window.start, window.end, window.timezone, window.freezes) == (
            ("mon", "tue", "wed", "thu", "fri", "sat", "sun"), time(0), time(0), "UTC", ())


def test_time_gates_dump_in_the_pipeline_form_and_the_dump_is_a_valid_pipeline():
    definition = parse_pipeline(FULL)
    dumped = definition.model_dump(mode="json")
    assert dumped["environments"][1]["gates"] == [
        {"soak": "1h30m"},
        {"change_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00:30",
                           "timezone": "Europe/Paris",
                           "freezes": [{"from": "2026-12-20T00:00:00+01:00", "until": "2027-01-04T00:00:00+01:00",
                                        "reason": "year-end freeze"},
                                       {"from": "2026-05-01T00:00:00", "until": "2026-05-02T00:00:00",
                                        "reason": None}]}}]
    assert PipelineDefinition.model_validate(dumped) == definition
    assert PipelineDefinition.model_validate_json(definition.model_dump_json()) == definition
    assert PipelineDefinition.model_validate(definition.model_dump()) == definition


def test_time_gates_built_in_code_dump_and_validate_the_same_way():
    window = ChangeWindowGate(days=("sat",), start=time(22), end=time(2), freezes=(
        Freeze(start=datetime(2026, 1, 1, tzinfo=UTC), until=datetime(2026, 1, 2, tzinfo=UTC)),))
    definition = PipelineDefinition(service="p", environments=[{"name": "dev"}, {
        "name": "prod", "gates": [SoakGate(seconds=90), window]}])
    assert PipelineDefinition.model_validate(definition.model_dump(mode="json")) == definition
    assert definition.model_dump(mode="json")["environments"][1]["gates"][0] == {"soak": "1m30s"}


def test_the_content_hash_changes_with_a_time_gate():
    base = parse_pipeline(HEADER + "    gates: [{soak: 10m}]\n")
    assert parse_pipeline(HEADER + "    gates: [{soak: 600s}]\n").content_hash == base.content_hash
    assert parse_pipeline(HEADER + "    gates: [{soak: 11m}]\n").content_hash != base.content_hash


PROD = HEADER + "    gates:\n"  # line 6 onwards: prod's gates, one per line
ERRORS = [  # (sentence, yaml, line, column, path, message)
    ("a soak without a unit", HEADER + "    gates: [{soak: 600}]\n", 5, 20, "environments[1].gates[0].soak",
     "a soak is a duration with a unit, e.g. {soak: 10m} or {soak: 1h30m}; got 600"),
    ("a soak in words", PROD + "      - {soak: 10 minutes}\n", 6, 16, "environments[1].gates[0].soak",
     "'10 minutes' is not a duration; write it like 30s, 10m, 2h or 1h30m"),
    ("a soak of zero", PROD + "      - soak: 0s\n", 6, 15, "environments[1].gates[0].soak",
     "a soak of zero waits for nothing; give at least 1s (or remove the gate)"),
    ("a soak on the first environment", "service: p\nenvironments:\n  - name: dev\n    gates: [{soak: 1m}]\n",
     4, 13, "environments[0].gates[0]", "a soak gate needs a previous environment to soak in; 'dev' is the first"),
    ("an unknown timezone", PROD + "      - change_window:\n          timezone: Europe/Pariss\n", 7, 21,
     "environments[1].gates[0].change_window.timezone",
     "unknown timezone 'Europe/Pariss'; use an IANA name such as Europe/Paris or UTC"),
    ("a timezone abbreviation", PROD + "      - change_window: {timezone: cest}\n", 6, 35,
     "environments[1].gates[0].change_window.timezone",
     "unknown timezone 'cest'; use an IANA name such as Europe/Paris or UTC"),
    ("a start without a leading zero", PROD + "      - change_window: {start: '9:00'}\n", 6, 32,
     "environments[1].gates[0].change_window.start",
     "'9:00' is not a time of day; write it as \"HH:MM\" or \"HH:MM:SS\" (00:00 to 23:59:59)"),
    ("an end past midnight", PROD + "      - change_window: {end: '24:00'}\n", 6, 30,
     "environments[1].gates[0].change_window.end",
     "'24:00' is not a time of day; write it as \"HH:MM\" or \"HH:MM:SS\" (00:00 to 23:59:59)"),
    ("an unknown day", PROD + "      - change_window: {days: [mon, friday]}\n", 6, 37,
     "environments[1].gates[0].change_window.days[1]", "Input should be 'mon', 'tue', 'wed', 'thu', 'fri', "
     "'sat' or 'sun'"),
    ("no day at all", PROD + "      - change_window: {days: []}\n", 6, 31,
     "environments[1].gates[0].change_window.days", "a change window needs at least one day (omit 'days' for every day)"),
    ("the sketch's hours key", PROD + "      - change_window: {hours: 09-17}\n", 6, 25,
     "environments[1].gates[0].change_window.hours", "unknown key 'hours'"),
    ("a change window that is not a mapping", PROD + "      - change_window: 09-17\n", 6, 24,
     "environments[1].gates[0].change_window", "a change window is a mapping, e.g. {change_window: {days: [mon, "
     "tue, wed, thu, fri], start: \"09:00\", end: \"17:00\", timezone: Europe/Paris}}"),
    ("a freeze that ends before it starts",
     PROD + "      - change_window:\n          freezes:\n            - {from: 2026-12-20, until: 2026-12-19}\n",
     8, 15, "environments[1].gates[0].change_window.freezes[0]",
     "a freeze ends after it starts; 'until' 2026-12-19T00:00:00 is not after 'from' 2026-12-20T00:00:00"),
    ("a freeze with one offset",
     PROD + "      - change_window:\n          freezes: [{from: 2026-12-20T00:00:00Z, until: 2026-12-22}]\n",
     7, 21, "environments[1].gates[0].change_window.freezes[0]",
     "give 'from' and 'until' both with a UTC offset or both without one"),
    ("a freeze from a word",
     PROD + "      - change_window:\n          freezes: [{from: christmas, until: 2026-12-27}]\n",
     7, 28, "environments[1].gates[0].change_window.freezes[0].from",
     "'christmas' is not a date and time; write it like 2026-12-20T00:00:00+01:00 (or 2026-12-20)"),
    ("a freeze without an end", PROD + "      - change_window:\n          freezes: [{from: 2026-12-20}]\n",
     7, 21, "environments[1].gates[0].change_window.freezes[0].until", "missing required key 'until'"),
]


@pytest.mark.parametrize(("text", "line", "column", "path", "message"),
                         [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_each_invalid_time_gate_is_reported_with_its_line_column_path_and_message(text, line, column, path,
                                                                                  message):
    assert problems_of(text) == [Problem(line, column, path, message)]


def test_a_bad_duration_renders_as_file_line_column():
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(HEADER + "    gates: [{soak: 2x}]\n", "pipeline.yaml")
    assert str(caught.value) == ("pipeline.yaml:5:20: environments[1].gates[0].soak: '2x' is not a duration; "
                                 "write it like 30s, 10m, 2h or 1h30m")
