"""Unit tests for services.gates.domain: which verdict each gate gives a release, one row per rule."""

from datetime import UTC, datetime

import pytest

from services.gates.domain import Facts, Release, Verdict, evaluate
from shared.contracts.pipeline import parse_pipeline

DIGEST = "sha256:" + "a" * 64
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
VERIFIED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
OTHER = "sha256:" + "b" * 64

PIPELINE = parse_pipeline("""\
service: payments
environments:
  - name: dev
  - name: test
    gates: [{evidence: unit-tests}]
  - name: prod
    gates: [{approval: {role: release-manager, min: 1, not_author: true}}]
""")
AUTHOR_MAY_APPROVE = parse_pipeline("""\
service: payments
environments:
  - name: dev
  - name: prod
    gates: [{approval: {min: 1, not_author: false}}]
""")
TWO_APPROVERS = parse_pipeline("""\
service: payments
environments:
  - name: dev
  - name: prod
    gates: [{approval: {min: 2}}]
""")


def release(**changes) -> Release:
    return Release(**(dict(service="payments", version="1.4.0", digest=DIGEST, author="alice") | changes))


MANAGERS = {who: frozenset({"release-manager"}) for who in ("alice", "bob", "carol")}
"""Verified groups: alice, bob and carol are release managers; mallory is in none."""


def facts(pipeline=PIPELINE, release=release(), verified_in=(), evidence=None, approvals=None,
          groups=MANAGERS) -> Facts:
    return Facts(pipeline=pipeline, release=release, verified_at=dict.fromkeys(verified_in, VERIFIED),
                 evidence=evidence or {}, approvals=approvals or {}, approver_groups=groups)


CASES = [
    # (env, digest, facts, outcome, a phrase the reasons must contain)
    pytest.param("dev", DIGEST, facts(pipeline=None), "pending", "no pipeline",
                 id="without a pipeline the promotion waits"),
    pytest.param("qa", DIGEST, facts(), "failed", "'qa' is not in the pipeline",
                 id="an environment not in the pipeline can never pass"),
    pytest.param("dev", DIGEST, facts(release=None), "pending", "not registered",
                 id="an artifact that is not registered yet waits"),
    pytest.param("dev", OTHER, facts(), "failed", f"digest {OTHER} is not the registered artifact {DIGEST}",
                 id="a digest other than the registered one fails"),
    pytest.param("test", DIGEST, facts(), "pending", "not yet verified in dev",
                 id="test waits until the release is verified in dev"),
    pytest.param("prod", DIGEST, facts(verified_in={"dev"}, approvals={"bob": "granted"}), "pending",
                 "not yet verified in test",
                 id="nothing skips an environment: verified in dev is not enough for prod"),
    pytest.param("dev", DIGEST, facts(), "passed", None,
                 id="the first environment without gates passes"),
    pytest.param("test", DIGEST, facts(verified_in={"dev"}, release=release(checks={"unit-tests": "passed"})),
                 "passed", None, id="evidence from CI checks passes the evidence gate"),
    pytest.param("test", DIGEST, facts(verified_in={"dev"}, evidence={("dev", "unit-tests"): "passed"}),
                 "passed", None, id="evidence recorded in the previous environment passes the evidence gate"),
    pytest.param("test", DIGEST, facts(verified_in={"dev"}), "pending", "waiting for evidence 'unit-tests'",
                 id="without evidence the evidence gate waits"),
    pytest.param("test", DIGEST, facts(verified_in={"dev"}, evidence={("test", "unit-tests"): "passed"}),
                 "pending", "waiting for evidence 'unit-tests' from CI or dev",
                 id="evidence from the target environment itself does not count"),
    pytest.param("test", DIGEST, facts(verified_in={"dev"}, evidence={("dev", "lint"): "passed"}),
                 "pending", "waiting for evidence 'unit-tests'", id="evidence for another check does not count"),
    pytest.param("test", DIGEST, facts(verified_in={"dev"}, evidence={("dev", "unit-tests"): "failed"}),
                 "pending", "evidence 'unit-tests' failed in dev",
                 id="evidence that failed in the previous environment keeps the gate pending"),
    pytest.param("test", DIGEST, facts(verified_in={"dev"}, release=release(checks={"unit-tests": "failed"})),
                 "pending", "evidence 'unit-tests' failed in CI",
                 id="evidence that failed in CI keeps the gate pending"),
    pytest.param("prod", DIGEST, facts(verified_in={"dev", "test"}), "pending",
                 "waiting for 1 approval(s) from release-manager",
                 id="prod waits for an approver"),
    pytest.param("prod", DIGEST, facts(verified_in={"dev", "test"}, approvals={"alice": "granted"}), "pending",
                 "alice is the author and cannot approve",
                 id="prod waits for an approver who is not the author"),
    pytest.param("prod", DIGEST, facts(verified_in={"dev", "test"}, approvals={"bob": "granted"}), "passed", None,
                 id="an approval by someone other than the author passes prod"),
    pytest.param("prod", DIGEST, facts(verified_in={"dev", "test"}, approvals={"mallory": "granted"}), "pending",
                 "mallory not in release-manager",
                 id="an approval by someone outside the gate's groups does not count"),
    pytest.param("prod", DIGEST, facts(verified_in={"dev", "test"}, approvals={"bob": "granted"}, groups={}),
                 "pending", "bob not in release-manager",
                 id="an approval without verified groups does not count where the gate names some"),
    pytest.param("prod", DIGEST, facts(pipeline=AUTHOR_MAY_APPROVE, verified_in={"dev"},
                                       approvals={"alice": "granted"}), "passed", None,
                 id="the author's own approval counts when not_author is false"),
    pytest.param("prod", DIGEST, facts(pipeline=TWO_APPROVERS, verified_in={"dev"},
                                       approvals={"alice": "granted", "bob": "granted"}), "pending",
                 "waiting for 1 approval(s)",
                 id="two approvals are not enough for min 2 when one is the author's"),
    pytest.param("prod", DIGEST, facts(pipeline=TWO_APPROVERS, verified_in={"dev"},
                                       approvals={"bob": "granted", "carol": "granted"}), "passed", None,
                 id="two approvals by distinct non-authors pass min 2"),
    pytest.param("prod", DIGEST, facts(verified_in={"dev", "test"},
                                       approvals={"bob": "granted", "carol": "rejected"}), "failed",
                 "rejected by carol", id="any rejection fails the gate even with enough approvals"),
]


@pytest.mark.parametrize(("env", "digest", "known", "outcome", "reason_says"), CASES)
def test_the_gates_of_an_environment_give_the_expected_verdict(env, digest, known, outcome, reason_says):
    verdict = evaluate(env, digest, known, NOW)
    assert verdict.outcome == outcome, verdict.reasons
    if reason_says is None:
        assert verdict == Verdict("passed", ())
    else:
        assert any(reason_says in reason for reason in verdict.reasons), verdict.reasons


def test_a_pending_gate_lists_one_reason_per_gate_that_has_not_passed():
    pipeline = parse_pipeline("""\
service: payments
environments:
  - name: dev
  - name: prod
    gates: [{evidence: smoke}, {approval: {}}]
""")
    verdict = evaluate("prod", DIGEST, facts(pipeline=pipeline, verified_in={"dev"}), NOW)
    assert verdict.outcome == "pending"
    assert len(verdict.reasons) == 2
    assert "waiting for evidence 'smoke'" in verdict.reasons[0]
    assert "waiting for 1 approval(s)" in verdict.reasons[1]
