"""Unit tests for gates' rules on a pipeline that fans out and joins again (`after`, `require`): which upstream
verifications a join waits for, and how soak and evidence gates read several upstreams."""

from datetime import UTC, datetime, timedelta

import pytest

from services.gates.domain import Facts, Release, evaluate
from shared.contracts.pipeline import parse_pipeline

DIGEST = "sha256:" + "a" * 64
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
PIPELINE = parse_pipeline("""\
service: payments
environments:
  - {name: staging, driver: noop}
  - {name: prod-eu, driver: noop, after: [staging]}
  - {name: prod-us, driver: noop, after: [staging]}
  - {name: global, driver: noop, after: [prod-eu, prod-us]}
  - {name: audit, driver: noop, after: [prod-eu, prod-us], require: any}
  - {name: soaked-all, driver: noop, after: [prod-eu, prod-us], gates: [{soak: 10m}]}
  - {name: soaked-any, driver: noop, after: [prod-eu, prod-us], require: any, gates: [{soak: 10m}]}
  - {name: checked, driver: noop, after: [prod-eu, prod-us], gates: [{evidence: smoke}]}
""")


def facts(verified: dict[str, timedelta], evidence: dict[tuple[str, str], str] | None = None) -> Facts:
    """The release verified in each named environment that long before NOW."""
    return Facts(pipeline=PIPELINE, release=Release("payments", "1.0.0", DIGEST, "alice"),
                 verified_at={env: NOW - ago for env, ago in verified.items()}, evidence=evidence or {})


LONG = timedelta(hours=1)


@pytest.mark.parametrize(("env", "verified", "outcome", "reasons"), [
    pytest.param("prod-eu", {"staging": LONG}, "passed", (), id="each side of a fan-out needs only staging"),
    pytest.param("prod-us", {}, "pending", ("not yet verified in staging",), id="and waits for it"),
    pytest.param("global", {"prod-eu": LONG}, "pending", ("not yet verified in prod-us",),
                 id="a join of all waits for the side not verified yet"),
    pytest.param("global", {}, "pending", ("not yet verified in prod-eu, prod-us",), id="naming every missing one"),
    pytest.param("global", {"prod-eu": LONG, "prod-us": LONG}, "passed", (), id="and passes with both"),
    pytest.param("audit", {"prod-us": LONG}, "passed", (), id="a join of any passes with one side"),
    pytest.param("audit", {"staging": LONG}, "pending", ("not yet verified in any of prod-eu, prod-us",),
                 id="and waits while neither side verified it"),
])
def test_a_join_waits_for_its_upstreams_as_its_require_says(env, verified, outcome, reasons):
    verdict = evaluate(env, DIGEST, facts(verified), NOW)
    assert (verdict.outcome, verdict.reasons) == (outcome, reasons)


def test_a_soak_after_a_join_of_all_lasts_until_the_last_side_has_soaked():
    verdict = evaluate("soaked-all", DIGEST, facts({"prod-eu": LONG, "prod-us": timedelta(minutes=4)}), NOW)
    assert verdict.outcome == "pending" and verdict.wake_at == NOW + timedelta(minutes=6)
    assert verdict.reasons == ("soaking in prod-us for 10m, until 2026-12-02T12:06:00+00:00",)


def test_a_soak_after_a_join_of_any_ends_with_the_first_side_that_has_soaked():
    assert evaluate("soaked-any", DIGEST, facts({"prod-eu": LONG, "prod-us": timedelta(minutes=4)}),
                    NOW).outcome == "passed"
    verdict = evaluate("soaked-any", DIGEST, facts({"prod-us": timedelta(minutes=4)}), NOW)
    assert verdict.wake_at == NOW + timedelta(minutes=6)


@pytest.mark.parametrize(("evidence", "outcome", "reasons"), [
    ({("prod-us", "smoke"): "passed"}, "passed", ()),
    ({}, "pending", ("waiting for evidence 'smoke' from CI or prod-eu or prod-us",)),
    ({("prod-eu", "smoke"): "failed"}, "pending", ("evidence 'smoke' failed in prod-eu",)),
])
def test_evidence_after_a_join_may_come_from_any_upstream(evidence, outcome, reasons):
    verdict = evaluate("checked", DIGEST, facts({"prod-eu": LONG, "prod-us": LONG}, evidence), NOW)
    assert (verdict.outcome, verdict.reasons) == (outcome, reasons)
