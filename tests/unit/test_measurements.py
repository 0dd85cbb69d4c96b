"""Metric analysis, the pure parts: conditions, queries, the measuring schedule and what measurements add up to."""

import httpx
import pytest
from pydantic import ValidationError

from services.deployer.measurements import _one_number, due, fill, measure, next_due, outcome, passes
from shared.contracts.pipeline import Analysis, Metric

ERRORS = Metric(name="error-rate", query='sum(rate(app_requests_total{service="{{service}}",lane="{{ lane }}"}[1m]))',
                success="result < 0.05", interval=10, count=3, failure_limit=1, inconclusive_limit=0)


@pytest.mark.parametrize(("success", "value", "expected"), [
    ("result < 0.05", 0.049, True), ("result < 0.05", 0.05, False), ("result<=0.05", 0.05, True),
    ("result >= 100", 100.0, True), ("result > 1e3", 999.0, False), ("result == 0", 0.0, True),
    ("result != 0", 0.0, False), (" result > -1 ", -0.5, True)])
def test_a_success_condition_compares_the_result_with_a_number(success, value, expected):
    assert passes(success, value) is expected


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("success", "__import__('os').system('id')", "write `result` compared with a number"),
    ("success", "result < threshold", "write `result` compared with a number"),
    ("success", "0.05 > result", "write `result` compared with a number"),
    ("query", "up{job='{{job}}'}", "unknown placeholder {{job}}"),
    ("interval", "0s", "at least 1s"),
    ("name", "Error Rate", "should match pattern"),
])
def test_a_metric_that_cannot_be_evaluated_safely_is_refused_with_the_reason(field, value, reason):
    with pytest.raises(ValidationError, match=reason.replace("{", r"\{").replace("(", r"\(")):
        Metric.model_validate({**ERRORS.model_dump(mode="json"), field: value})


def test_a_metric_is_named_once_per_analysis():
    with pytest.raises(ValidationError, match="named twice"):
        Analysis(metrics=(ERRORS, ERRORS))


def test_placeholders_are_filled_with_the_canarys_labels():
    assert fill(ERRORS.query, {"service": "payments", "lane": "green"}) == \
        'sum(rate(app_requests_total{service="payments",lane="green"}[1m]))'


def test_measurements_come_one_interval_apart_from_the_steps_start():
    taken = [{"metric": "error-rate", "verdict": "passed", "value": 0.0, "detail": ""}]
    assert due([ERRORS], [], 9.9) == [] and due([ERRORS], [], 10.0) == [ERRORS]
    assert due([ERRORS], taken, 19.0) == [] and next_due([ERRORS], taken, 19.0) == pytest.approx(1.0)
    assert next_due([ERRORS], taken * 3, 100.0) is None, "every measurement taken"


def test_an_initial_delay_holds_every_measurement_back_by_as_much():
    delayed = ERRORS.model_copy(update={"initial_delay": 6})
    taken = [{"metric": "error-rate", "verdict": "passed", "value": 0.0, "detail": ""}]
    assert due([delayed], [], 15.9) == [] and due([delayed], [], 16.0) == [delayed]
    assert next_due([delayed], [], 0.0) == pytest.approx(16.0)
    assert due([delayed], taken, 25.0) == [] and next_due([delayed], taken, 25.0) == pytest.approx(1.0)
    assert Metric.model_validate({**ERRORS.model_dump(mode="json"), "initial_delay": "6s"}).initial_delay == 6


def m(verdict: str, value: float | None = 0.0, detail: str = "") -> dict:
    return {"metric": "error-rate", "verdict": verdict, "value": value, "detail": detail}


@pytest.mark.parametrize(("taken", "expected"), [
    ([], None),
    ([m("passed"), m("failed", 0.4)], None),                                       # one failure is within the limit
    ([m("passed"), m("failed", 0.4), m("failed", 0.5)], "failed"),
    ([m("passed"), m("passed"), m("failed", 0.4)], "passed"),
    ([m("inconclusive", None, "no data: the query returned no series")], "inconclusive"),
    ([m("passed"), m("passed"), m("passed")], "passed"),
])
def test_what_a_metrics_measurements_add_up_to(taken, expected):
    assert outcome(ERRORS, taken)[0] == expected


def test_a_failed_metric_names_the_count_the_condition_and_the_value():
    assert outcome(ERRORS, [m("failed", 0.4), m("failed", 0.5)])[1] == \
        "metric error-rate: 2 of 2 measurements failed (result < 0.05; last 0.5)"


@pytest.mark.parametrize(("data", "expected"), [
    ({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0.25"]}]}, (0.25, "")),
    ({"resultType": "scalar", "result": [1.0, "3"]}, (3.0, "")),
    ({"resultType": "vector", "result": []}, (None, "no data: the query returned no series")),
    ({"resultType": "vector", "result": [{"value": [1, "1"]}, {"value": [1, "2"]}]},
     (None, "the query returned 2 series, not one")),
    ({"resultType": "vector", "result": [{"value": [1, "NaN"]}]}, (None, "the query returned nan (no requests "
                                                                          "to divide by?)")),
    ({"resultType": "matrix", "result": []}, (None, "the query returned a matrix, not a number")),
    ("garbage", (None, "Prometheus's answer was not an instant query result")),
])
def test_only_one_finite_number_is_a_measurement(data, expected):
    assert _one_number(data) == expected


async def test_prometheus_unreachable_or_refusing_is_inconclusive_never_a_pass():
    async with httpx.AsyncClient(timeout=1.0) as client:
        down = await measure(client, "http://127.0.0.1:9", ERRORS, {"service": "p", "lane": "blue"})
    assert (down.verdict, down.value) == ("inconclusive", None) and "did not answer" in down.detail

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "error": "parse error at char 5"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        refused = await measure(client, "http://prometheus", ERRORS, {"service": "p", "lane": "blue"})
    assert refused.verdict == "inconclusive" and refused.detail == "Prometheus refused the query: parse error at char 5"
