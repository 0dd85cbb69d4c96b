"""Gate decisions, pure: given what is known about a release, may it enter the environment?

`decide(state, event, now)` is the whole rule of an input: the handler keeps the event's fact, loads the state
it bears on (the pipeline and the promotions it may unblock, each with its facts), decides, saves the outcomes
and emits the events (services/gates/handlers.py).

Outcomes are kept apart: *passed* (every gate said yes), *pending* (some gate has not
said yes yet; reasons say which), *failed* (a gate said no: a rejection, or a request
that can never pass). The clock comes in as `now`: time gates (soak, change window) also
say when their answer may change (`Verdict.wake_at`), and gates sets a timer for then.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from services.gates.supply_chain import provenance_problem, signature_problem
from services.gates.windows import window_problem
from shared.contracts.events import (ApprovalGranted, ApprovalRejected, EventData, GateFailed, GatePassed,
                                     GatePending, PromotionRequested, SupplyChain, VerificationPassed)
from shared.contracts.pipeline import (ApprovalGate, ChangeWindowGate, EvidenceGate, Gate, PipelineDefinition,
                                       ProvenanceGate, SignatureGate, SoakGate)
from shared.signature_keys import TrustedKey
from shared.contracts.time_gates import format_duration


@dataclass(frozen=True)
class Release:
    """The artifact a promotion is about, as gates know it."""

    service: str
    version: str
    digest: str
    author: str
    checks: dict[str, str] = field(default_factory=dict)
    location: str | None = None
    """`registry/repository@digest` of an image; None for a file."""
    commit: str | None = None
    """The source commit the build event names (None: registered before gates kept it)."""
    supply_chain: SupplyChain | None = None
    """The signatures and attestations intake found beside it (loaded only for environments that check them)."""


@dataclass(frozen=True)
class Facts:
    """Everything gates know that bears on one promotion (service, version, env)."""

    pipeline: PipelineDefinition | None
    release: Release | None
    verified_at: dict[str, datetime] = field(default_factory=dict)
    """When the digest was verified, by environment (the verification event's own time)."""
    evidence: dict[tuple[str, str], str] = field(default_factory=dict)
    approvals: dict[str, str] = field(default_factory=dict)
    """Each approver's latest decision (granted or rejected), by verified identity."""
    approver_groups: dict[str, frozenset[str]] = field(default_factory=dict)
    """The verified groups of each approver when they decided."""
    released_here: bool = False
    """This very release (version and digest) was already deployed and verified in the environment
    by a promotion, so its gates passed once: only a rebuild, reading topics out of order, sees this."""
    trusted_keys: Mapping[str, TrustedKey | str] = field(default_factory=dict)
    """The keys gates trusts by key id (or why a key file is not one), for signature and provenance gates."""

    @property
    def verified_in(self) -> frozenset[str]:
        """The environments the digest was verified in."""
        return frozenset(self.verified_at)


@dataclass(frozen=True)
class Verdict:
    """What the gates of one environment say about one release."""

    outcome: Literal["passed", "pending", "failed"]
    reasons: tuple[str, ...] = ()
    wake_at: datetime | None = None
    """For a pending verdict: the earliest instant a time gate that holds the release may let it through."""
    evidence: tuple[str, ...] = ()
    """For a passed verdict: what the signature and provenance gates accepted (which key signed what)."""


@dataclass(frozen=True)
class Pending:
    """A promotion waiting at an environment's gates, with the reasons of its last verdict."""

    service: str
    version: str
    env: str
    digest: str
    reasons: list[str]


@dataclass(frozen=True)
class State:
    """What a decision reads: the service's latest pipeline (and its version) and the pending promotions the input
    may unblock, each with everything gates know of it once the input's own fact is kept."""

    pipeline_version: str | None
    pipeline: PipelineDefinition | None
    promotions: tuple[tuple[Pending, Facts], ...] = ()


@dataclass(frozen=True)
class Decision:
    """What an input changes: the events to emit, and each judged promotion's new verdict (saved as its outcome,
    with the instant its timer is due)."""

    events: tuple[EventData, ...]
    verdicts: tuple[tuple[Pending, Verdict], ...] = ()


def decide(state: State, event: EventData | None, now: datetime) -> Decision:
    """The rule of one input (`event`; None: a timer came due) at `now`: each pending promotion judged, a verdict
    said where it changed or a person acted (an approval or a rejection is always answered), and a verification
    in an environment requests the release for each environment after it."""
    always = isinstance(event, ApprovalGranted | ApprovalRejected)
    emitted: list[EventData] = []
    if isinstance(event, VerificationPassed) and event.purpose == "promotion":
        emitted += requests_after(state.pipeline, event)
    verdicts = []
    for pending, facts in state.promotions:
        verdict = evaluate(pending.env, pending.digest, facts, now)
        ident = dict(service=pending.service, version=pending.version, digest=pending.digest, env=pending.env)
        said = verdict_event(verdict, facts, ident, state.pipeline_version, pending.reasons, always)
        emitted += [said] if said is not None else []
        verdicts.append((pending, verdict))
    return Decision(tuple(emitted), tuple(verdicts))


def evaluate(env: str, digest: str, facts: Facts, now: datetime) -> Verdict:
    """Check, in order: the pipeline, the artifact, the upstream environments (`after`: all, or any one, verified
    the release), then each gate at `now`."""
    early = _before_gates(env, digest, facts)
    if early is not None:
        return early
    assert facts.pipeline is not None and facts.release is not None
    environment = facts.pipeline.environment(env)
    upstreams = facts.pipeline.upstreams(env)
    verified = tuple(upstream for upstream in upstreams if is_verified_in(facts, upstream))
    if environment.require == "any" and upstreams and not verified:
        return Verdict("pending", (f"not yet verified in any of {', '.join(upstreams)}",))
    if environment.require == "all" and len(verified) < len(upstreams):
        return Verdict("pending", (f"not yet verified in {', '.join(u for u in upstreams if u not in verified)}",))
    found = _Findings()
    for gate in environment.gates:
        found.add(_judge(gate, digest, facts, verified, now, every=environment.require == "all"))
    if found.failed:
        return Verdict("failed", tuple(found.failed))
    if found.pending:
        return Verdict("pending", tuple(found.pending), min(found.wakes, default=None))
    return Verdict("passed", evidence=tuple(found.accepted))


def _before_gates(env: str, digest: str, facts: Facts) -> Verdict | None:
    """The verdict when the pipeline or the artifact decides before any gate is looked at, else None."""
    if facts.pipeline is None:
        return Verdict("pending", ("no pipeline has been applied for this service",))
    if env not in facts.pipeline.environment_names:
        return Verdict("failed", (f"environment {env!r} is not in the pipeline",))
    if facts.release is None:
        return Verdict("pending", ("the artifact is not registered yet",))
    if facts.release.digest != digest:
        return Verdict("failed", (f"digest {digest} is not the registered artifact {facts.release.digest}",))
    if facts.released_here:
        return Verdict("passed")
    return None


@dataclass
class _Findings:
    """What one environment's gates said, gathered gate by gate."""

    failed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    wakes: list[datetime] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)

    def add(self, other: "_Findings") -> None:
        """Take in one gate's findings."""
        self.failed += other.failed
        self.pending += other.pending
        self.wakes += other.wakes
        self.accepted += other.accepted


def _judge(gate: Gate, digest: str, facts: Facts, verified: tuple[str, ...], now: datetime,
           every: bool) -> _Findings:
    """What one gate says of the release at `now` (`verified`: the upstreams that verified it)."""
    release = facts.release
    assert release is not None
    if isinstance(gate, EvidenceGate):
        return _Findings(pending=evidence_problems(facts, gate, verified))
    if isinstance(gate, ApprovalGate):
        rejected, waiting = approval_problems(facts, gate)
        return _Findings(failed=rejected, pending=waiting)
    if isinstance(gate, (SoakGate, ChangeWindowGate)):
        reason, wake = (soak_problem(facts, gate, verified, now, every=every)
                        if isinstance(gate, SoakGate) else window_problem(gate, now))
        return _Findings(pending=[reason] if reason else [], wakes=[wake] if wake else [])
    if isinstance(gate, SignatureGate):
        problem, holds = signature_problem(gate, facts.trusted_keys, digest, release.location, release.supply_chain)
    else:
        assert isinstance(gate, ProvenanceGate), gate
        problem, holds = provenance_problem(gate, facts.trusted_keys, digest, release.commit, release.supply_chain)
    return _Findings(failed=[problem] if problem else [], accepted=[holds] if holds else [])


def verdict_event(verdict: Verdict, facts: Facts, ident: dict, pipeline_version: str | None,
                  previous: list[str], always: bool = False) -> EventData | None:
    """What a verdict says on the bus: gate.passed with everything the deployer needs (the environment's
    strategy, driver, config and its version, the image), gate.failed with the reasons, or gate.pending when its
    reasons changed from `previous` (or `always`: a person acted and is answered); None when nothing changed.
    `ident`: service, version, digest, env."""
    reasons = list(verdict.reasons)
    if verdict.outcome == "passed":
        assert facts.pipeline is not None and facts.release is not None
        environment = facts.pipeline.environment(ident["env"])
        dumped = environment.model_dump(mode="json")
        return GatePassed(**ident, strategy=dumped["strategy"], driver=environment.driver, config=dumped["config"],
                          location=facts.release.location, replicas=environment.replicas,
                          resources=environment.resources, config_version=environment.config_version,
                          pipeline_version=pipeline_version, evidence=list(verdict.evidence))
    if verdict.outcome == "failed":
        return GateFailed(**ident, reasons=reasons)
    if always or reasons != previous:
        return GatePending(**ident, reasons=reasons)
    return None


def requests_after(pipeline: PipelineDefinition | None, verified: VerificationPassed) -> list[PromotionRequested]:
    """A release verified in an environment is requested for each that comes after it (one in a line, several
    where the pipeline fans out; a join is requested by each of its upstreams and judged by its `require`)."""
    if pipeline is None or verified.env not in pipeline.environment_names:
        return []
    return [PromotionRequested(service=verified.service, version=verified.version, digest=verified.digest,
                               env=following.name) for following in pipeline.downstreams(verified.env)]


def is_verified_in(facts: Facts, env: str) -> bool:
    """The release was deployed and verified in `env`."""
    return env in facts.verified_in


def soak_ends(verified_at: datetime, gate: SoakGate) -> datetime:
    """When a release verified at `verified_at` has soaked long enough."""
    return verified_at + timedelta(seconds=gate.seconds)


def soak_remaining(verified_at: datetime, gate: SoakGate, now: datetime) -> timedelta:
    """How much longer the release must soak (zero once it has)."""
    return max(soak_ends(verified_at, gate) - now, timedelta(0))


def soak_problem(facts: Facts, gate: SoakGate, upstreams: tuple[str, ...], now: datetime,
                 every: bool = True) -> tuple[str | None, datetime | None]:
    """(why the release still soaks, when it is done), or (None, None) once it has soaked: in each of the
    `upstreams` that verified it (`every`), or in one of them."""
    if not upstreams:  # the pipeline refuses a soak on the first environment
        return None, None
    ends = {upstream: soak_ends(facts.verified_at[upstream], gate) for upstream in upstreams}
    where = max(ends, key=ends.__getitem__) if every else min(ends, key=ends.__getitem__)
    if ends[where] <= now:
        return None, None
    return f"soaking in {where} for {format_duration(gate.seconds)}, until {_shown(ends[where])}", ends[where]


def _shown(instant: datetime) -> str:
    """An instant in UTC to the second, rounded up (so the release is never shown ready too early)."""
    rounded = instant.astimezone(UTC)
    if rounded.microsecond:
        rounded = rounded.replace(microsecond=0) + timedelta(seconds=1)
    return rounded.isoformat()


def evidence_problems(facts: Facts, gate: EvidenceGate, upstreams: tuple[str, ...]) -> list[str]:
    """Nothing if the check passed in CI or in an upstream environment that verified the release; else why we
    wait."""
    assert facts.release is not None
    if facts.release.checks.get(gate.check) == "passed":
        return []
    if any(facts.evidence.get((upstream, gate.check)) == "passed" for upstream in upstreams):
        return []
    where = f"CI or {' or '.join(upstreams)}" if upstreams else "CI"
    failed = [upstream for upstream in upstreams if facts.evidence.get((upstream, gate.check)) == "failed"]
    if failed:
        return [f"evidence {gate.check!r} failed in {', '.join(failed)}"]
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
    outsiders = {who for who in counted if gate.groups and not gate.groups & facts.approver_groups.get(who, set())}
    counted -= outsiders
    if len(counted) >= gate.min:
        return [], []
    missing = gate.min - len(counted)
    reason = f"waiting for {missing} approval(s)"
    if gate.groups:
        reason += f" from {' or '.join(sorted(gate.groups))}"
    if outsiders:
        reason += f" ({', '.join(sorted(outsiders))} not in {' or '.join(sorted(gate.groups))})"
    if ignored:
        reason += f" ({author} is the author and cannot approve)"
    elif gate.not_author:
        reason += f" (not by the author, {author})"
    return [], [reason]
