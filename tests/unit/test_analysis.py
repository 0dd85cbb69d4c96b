"""Canary analysis: reading a slot's requests from the router's access log, its figures, the verdict."""

import json
from pathlib import Path

import pytest

from services.deployer.analysis import Figures, Outcome, Thresholds, judge, read_outcomes, summarise

CANARY, STABLE = 8102, 8101


def line(upstream: str, upstream_status: str, urt: str, status: int = 200, rt: float = 0.5,
         uri: str = "/") -> str:
    """One access-log line as nginx's promote_json format writes it."""
    return json.dumps({"t": "1700000000.123", "status": status, "upstream": upstream,
                       "upstream_status": upstream_status, "rt": rt, "urt": urt, "uri": uri}) + "\n"


def test_only_complete_lines_are_read_and_the_rest_waits_for_the_next_read(tmp_path: Path):
    log = tmp_path / "access.log"
    whole = line(f"127.0.0.1:{CANARY}", "200", "0.002") + line(f"127.0.0.1:{CANARY}", "500", "0.004", 500)
    partial = line(f"127.0.0.1:{CANARY}", "200", "0.003")
    log.write_text(whole + partial[:20])
    outcomes, offset = read_outcomes(log, 0, CANARY)
    assert (outcomes, offset) == ([Outcome(200, 2.0), Outcome(500, 4.0)], len(whole))
    with log.open("a") as more:
        more.write(partial[20:])
    assert read_outcomes(log, offset, CANARY) == ([Outcome(200, 3.0)], len(whole) + len(partial))


def test_a_retried_request_counts_for_the_last_upstream_with_its_status_and_time(tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_text(line(f"127.0.0.1:{CANARY}, 127.0.0.1:{STABLE}", "502, 200", "0.001, 0.007"))
    assert read_outcomes(log, 0, STABLE)[0] == [Outcome(200, 7.0)]
    assert read_outcomes(log, 0, CANARY)[0] == []


def test_router_probes_other_slots_and_foreign_lines_are_skipped(tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_text(line(f"127.0.0.1:{CANARY}", "200", "0.001", uri="/_router/generation")
                   + line(f"127.0.0.1:{STABLE}", "200", "0.001")
                   + line(f"127.0.0.1:1{CANARY}", "200", "0.001")  # port 18102 is not 8102
                   + "not json\n")
    assert read_outcomes(log, 0, CANARY) == ([], log.stat().st_size)


def test_without_an_upstream_time_the_request_time_is_the_latency(tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_text(line(f"127.0.0.1:{CANARY}", "-", "-", status=504, rt=1.001))
    assert read_outcomes(log, 0, CANARY)[0] == [Outcome(504, 1001.0)]


def test_a_missing_log_has_no_outcomes_and_a_replaced_one_is_read_from_its_start(tmp_path: Path):
    log = tmp_path / "access.log"
    assert read_outcomes(log, 0, CANARY) == ([], 0)
    log.write_text(line(f"127.0.0.1:{CANARY}", "200", "0.001"))
    assert len(read_outcomes(log, 10_000, CANARY)[0]) == 1


def test_figures_count_5xx_as_errors_and_take_nearest_rank_percentiles():
    outcomes = [Outcome(500 if ms % 10 == 0 else 404 if ms == 1 else 200, float(ms)) for ms in range(1, 101)]
    assert summarise(outcomes) == Figures(requests=100, errors=10, error_rate=0.1, p50_ms=50.0, p95_ms=95.0,
                                          p99_ms=99.0, max_ms=100.0)
    assert summarise([Outcome(200, 3.0), Outcome(200, 1.0)]).p99_ms == 3.0


def test_no_requests_give_zero_figures():
    assert summarise([]) == Figures(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_figures_as_checks_are_strings():
    figures = summarise([Outcome(500, 2.06)] * 12 + [Outcome(200, 2.1)] * 13)
    assert figures.as_checks() == {"requests": "25", "errors": "12", "error_rate": "0.480", "p50_ms": "2.1",
                                   "p95_ms": "2.1", "p99_ms": "2.1", "max_ms": "2.1"}


@pytest.mark.parametrize(("figures", "thresholds", "verdict"), [
    (Figures(25, 12, 0.48, 2.1, 3.0, 4.0, 5.0), Thresholds(0.05, None, 20),
     "error rate 48.0% (12 of 25 requests) is above 5.0%"),
    (Figures(25, 0, 0.0, 2.1, 300.0, 812.0, 900.0), Thresholds(0.05, 500.0, 20),
     "p99 latency 812 ms is above 500 ms"),
    (Figures(3, 3, 1.0, 2.1, 3.0, 4.0, 5.0), Thresholds(0.05, 500.0, 20),
     "only 3 requests reached the canary (at least 20 needed)"),
    (Figures(25, 1, 0.04, 2.1, 3.0, 499.0, 900.0), Thresholds(0.05, 500.0, 20), None),
    (Figures(20, 1, 0.05, 2.1, 3.0, 4.0, 5.0), Thresholds(0.05, None, 20), None),
])
def test_the_verdict_names_the_first_threshold_missed(figures, thresholds, verdict):
    assert judge(figures, thresholds) == verdict
