"""Gate decisions, pure: given what is known about a release, may it enter the environment?

Outcomes are kept apart: *passed* (every gate said yes), *pending* (some gate has not
said yes yet; reasons say which), *failed* (a gate said no: a rejection, or a request
that can never pass).
"""

from dataclasses import dataclass, field
from typing import Literal

from shared.pipeline import ApprovalGate, EvidenceGate, PipelineDefinition


@dataclass(frozen=True)
class Release:
    """The artifact a promotion is about, as gates know it."""

    service: str
    version: str
    digest: str
    author: str
    checks: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Facts:
    """Everything gates know that bears on one promotion (service, version, env)."""

    pipeline: PipelineDefinition | None
    release: Release | None
    verified_in: frozenset[str] = frozenset()
    evidence: dict[tuple[str, str], str] = field(default_factory=dict)
    approvals: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """What the gates of one environment say about one release."""

    outcome: Literal["passed", "pending", "failed"]
    reasons: tuple[str, ...] = ()


def evaluate(env: str, digest: str, facts: Facts) -> Verdict:
    """Check, in order: the pipeline, the artifact, the previous environment, then each gate."""
    if facts.pipeline is None:
        return Verdict("pending", ("no pipeline has been applied for this service",))
    if env not in facts.pipeline.environment_names:
        return Verdict("failed", (f"environment {env!r} is not in the pipeline",))
    if facts.release is None:
        return Verdict("pending", ("the artifact is not registered yet",))
    if facts.release.digest != digest:
        return Verdict("failed", (f"digest {digest} is not the registered artifact {facts.release.digest}",))
    previous = facts.pipeline.previous_environment(env)
    if previous is not None and not is_verified_in(facts, previous.name):
        return Verdict("pending", (f"not yet verified in {previous.name}",))
    failed: list[str] = []
    pending: list[str] = []
    for gate in facts.pipeline.environment(env).gates:
        if isinstance(gate, EvidenceGate):
            pending += evidence_problems(facts, gate, previous.name if previous else None)
        elif isinstance(gate, ApprovalGate):
            rejected, waiting = approval_problems(facts, gate)
            failed += rejected
            pending += waiting
    if failed:
        return Verdict("failed", tuple(failed))
    if pending:
        return Verdict("pending", tuple(pending))
    return Verdict("passed")


def is_verified_in(facts: Facts, env: str) -> bool:
    """The release was deployed and verified in `env`."""
    return env in facts.verified_in


def evidence_problems(facts: Facts, gate: EvidenceGate, previous_env: str | None) -> list[str]:
    """Nothing if the check passed in CI or in the previous environment; else why we wait."""
    assert facts.release is not None
    if facts.release.checks.get(gate.check) == "passed":
        return []
    if previous_env and facts.evidence.get((previous_env, gate.check)) == "passed":
        return []
    where = f"CI or {previous_env}" if previous_env else "CI"
    if previous_env and facts.evidence.get((previous_env, gate.check)) == "failed":
        return [f"evidence {gate.check!r} failed in {previous_env}"]
    if facts.release.checks.get(gate.check) == "failed":
        return [f"evidence {gate.check!r} failed in CI"]
    return [f"waiting for evidence {gate.check!r} from {where}"]


def approval_problems(facts: Facts, gate: ApprovalGate) -> tuple[list[str], list[str]]:
    """(rejections, what is still missing) for an approval gate."""
    assert facts.release is not None
    author = facts.release.author
    rejections = sorted(who for who, decision in facts.approvals.items() if decision == "rejected")
    if rejections:
        return [f"rejected by {', '.join(rejections)}"], []
    granted = {who for who, decision in facts.approvals.items() if decision == "granted"}
    ignored = author in granted and gate.not_author
    counted = granted - {author} if gate.not_author else granted
    if len(counted) >= gate.min:
        return [], []
    missing = gate.min - len(counted)
    reason = f"waiting for {missing} approval(s)"
    if gate.role:
        reason += f" by a {gate.role}"
    if ignored:
        reason += f" ({author} is the author and cannot approve)"
    elif gate.not_author:
        reason += f" (not by the author, {author})"
    return [], [reason]
