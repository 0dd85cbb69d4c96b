"""Deployer decisions, pure: what an order asks for and how it runs, what a deployment needs, what its checks
mean, which environments a new pipeline redeploys, and `decide(state, event, now)`: the move an input calls for
in an environment (a deployment, a canary's next step, an operator's command).

The deployer's effects are a driver's and the router's (a process started, traffic moved), whose outcome is
only known once done; so `decide` returns the *move*, and the handler (or the canaries' task) makes it and
emits what it came to (services/deployer/handlers.py, canaries.py).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import TypeAdapter

from services.deployer import measurements
from services.deployer.analysis import Figures, Thresholds, judge
from shared.contracts.events import CanaryCommanded, Event, GatePassed, RollbackOrdered
from shared.contracts.pipeline import ROUTED_DRIVERS, BlueGreen, Canary, PipelineDefinition, Resources, Strategy

Config = dict[str, str | dict[str, str]]


@dataclass(frozen=True)
class Target:
    """One release to put into one environment, and why."""

    deployment_id: str
    service: str
    env: str
    version: str
    digest: str
    config: Config
    config_version: str
    purpose: str = "promotion"
    rollback_id: str | None = None
    driver: str = "local"
    location: str | None = None
    """The image, `registry/repository@digest` (the container driver); None for a file."""
    replicas: int = 1
    resources: Resources | None = None


@dataclass(frozen=True)
class Running:
    """What the driver reports running in an environment's slot."""

    pid: int
    digest: str
    config_version: str
    alive: bool
    leftover: bool = False
    """Something of the release remains though it does not run (an exited container): stop clears it."""
    deployment_id: str = ""
    """The deployment that started it (empty when the driver does not know)."""


class MissingSecret(Exception):
    """A config value refers to a secret that the secret store does not hold, or that is not the service's."""


def secret_in_scope(service: str, reference: str) -> bool:
    """A service's config may name only its own secrets: those under `<service>/`."""
    return reference.startswith(f"{service}/") and ".." not in reference.split("/")


def process_environment(target: Target, port: int, resolve_secret) -> dict[str, str]:
    """Environment variables for the app: its config (secrets resolved), plus what the deployer sets."""
    variables: dict[str, str] = {"APP_ENV": target.env}
    for key, value in target.config.items():
        if isinstance(value, dict):
            if not secret_in_scope(target.service, value["secret"]):
                raise MissingSecret(f"secret {value['secret']!r} is not {target.service}'s: a service's secret "
                                    f"references start with {target.service}/")
            secret = resolve_secret(value["secret"])
            if secret is None:
                raise MissingSecret(f"secret {value['secret']!r} is not in the secret store")
            variables[key] = secret
        else:
            variables[key] = value
    if bad := next((key for key, value in variables.items() if "\0" in value), None):
        # Refused before anything stops: the OS cannot pass a NUL, and the running release stays as it is.
        raise MissingSecret(f"config value of {bad} holds a NUL byte: it cannot be an environment variable")
    variables.update(
        BUILD_VERSION=target.version,
        PORT=str(port),
        ARTIFACT_DIGEST=target.digest,
        CONFIG_VERSION=target.config_version,
    )
    return variables


def needs_start(target: Target, running: Running | None) -> bool:
    """False when the exact release already runs (a redelivered order re-attaches, never starts twice)."""
    return not runs(running, target)


def verification_failure(target: Target, checks: dict[str, str]) -> str | None:
    """The first failed check as a reason, or None when every check passed."""
    for name in ("process", "digest", "health", "version"):
        result = checks.get(name, "not run")
        if result != "passed":
            return f"{name}: {result}"
    return None


LANES = ("blue", "green")
"""The two lanes of a routed environment: one takes the traffic, the other receives the next release."""


def other_lane(lane: str) -> str:
    """The lane that is not `lane`."""
    return LANES[1 - LANES.index(lane)]


def runs(running: Running | None, target: Target) -> bool:
    """The process is alive and runs exactly this release (digest and config version).

    A restore replaces what runs even when it claims to be the release (it drifted: another image under the
    same labels, a hand-made copy): only what this very restore started counts, so a redelivered restore
    re-attaches and a new one starts afresh."""
    if running is None or not running.alive:
        return False
    if target.purpose == "restore" and running.deployment_id != target.deployment_id:
        return False
    return (running.digest, running.config_version) == (target.digest, target.config_version)


def choose_lane(live: str | None, running: dict[str, Running | None], target: Target) -> tuple[str, bool]:
    """(the lane the release goes to, whether it must be started there).

    A lane that already runs exactly this release is used as it is: a redelivered order re-attaches,
    and a rollback to the release kept warm in the other lane is a switch back.
    """
    for lane in LANES:
        if runs(running.get(lane), target):
            return lane, False
    return ("blue" if live is None else other_lane(live)), True


def traffic_steps(kind: str, steps: tuple[int, ...], lane: str, live: str | None, live_alive: bool) -> tuple[int, ...]:
    """The shares of traffic the release takes in turn (an analysis follows each share below 100 %).

    Only a canary with a live release to compare against moves in steps; blue/green, a first
    deployment, a rollback and a release that already takes the traffic switch at once.
    """
    if kind == "canary" and live is not None and lane != live and live_alive:
        return steps
    return (100,)


def target_json(target: Target) -> dict:
    """A target as JSON (a durable canary keeps it in its row); `target_from_json` reads it back."""
    fields = {name: getattr(target, name) for name in Target.__dataclass_fields__}
    fields["resources"] = target.resources.model_dump(mode="json") if target.resources is not None else None
    return fields


def target_from_json(fields: dict) -> Target:
    """The target `target_json` wrote."""
    resources = fields.get("resources")
    return Target(**{**fields, "resources": Resources.model_validate(resources) if resources is not None else None})


def step_wait(elapsed: float, requests: int, interval: float, min_requests: int, max_wait: float) -> float:
    """Seconds until a canary step `elapsed` s old with `requests` canary requests so far can be judged (0: now).

    A step is judged once its `interval` is over and it has `min_requests`, or at `max_wait` whatever it has
    (too few is then a failure, never a pass); short of `min_requests`, it looks again within a second.
    """
    if elapsed < interval:
        return interval - elapsed
    if requests >= min_requests or elapsed >= max_wait:
        return 0.0
    return min(1.0, max_wait - elapsed)


ROLLBACK_SWITCH = BlueGreen(retire_after=0)
"""A rollback in a routed environment: all traffic at once to the release returned to; the other lane stops."""
_STRATEGY: TypeAdapter[Strategy] = TypeAdapter(Strategy)


def order_of(event: Event) -> tuple[Target, Strategy] | None:
    """What a deployment order asks for: gate.passed (a promotion, with the environment's strategy) or
    rollback.ordered (rolling; routed environments switch back, see `strategy_for`); None for anything else."""
    data = event.data
    if isinstance(data, GatePassed):
        return (Target(event.id, data.service, data.env, data.version, data.digest, dict(data.config),
                       data.config_version, driver=data.driver, location=data.location, replicas=data.replicas,
                       resources=data.resources), _STRATEGY.validate_python(data.strategy))
    if isinstance(data, RollbackOrdered):
        return (Target(event.id, data.service, data.env, data.version, data.digest, dict(data.config),
                       data.config_version, purpose="rollback", rollback_id=data.rollback_id, driver=data.driver,
                       location=data.location, replicas=data.replicas, resources=data.resources), "rolling")
    return None


def strategy_for(strategy: Strategy, target: Target, routed: bool) -> Strategy:
    """The strategy a deployment runs with: a rollback into an environment behind the router switches lanes at once
    (the release returned to may still run warm in the other lane) instead of a rolling stop and start."""
    if strategy == "rolling" and target.purpose == "rollback" and target.driver in ROUTED_DRIVERS and routed:
        return ROLLBACK_SWITCH
    return strategy


def reconfigurations(pipeline: PipelineDefinition, running: dict[str, dict],
                     cause_id: Callable[[str], str]) -> list[tuple[Target, Strategy]]:
    """The redeployments a newly applied pipeline calls for: each environment whose verified release runs with
    another config version than the pipeline's now (same digest, new config: an audited change). `running`:
    {env: version, digest, config_version, location} of what serves each; `cause_id(env)`: the redeployment's id."""
    out = []
    for environment in pipeline.environments:
        now = running.get(environment.name)
        if now is None or now["config_version"] == environment.config_version:
            continue
        dumped = environment.model_dump(mode="json")
        out.append((Target(cause_id(environment.name), pipeline.service, environment.name, now["version"],
                           now["digest"], dumped["config"], environment.config_version, purpose="reconfigure",
                           driver=environment.driver, location=now["location"], replicas=environment.replicas,
                           resources=environment.resources), environment.strategy))
    return out


@dataclass(frozen=True)
class CanaryView:
    """A canary in progress as its row says, with what its step has seen so far: the canary's requests at the
    router since the step began (`figures`) and the PromQL measurements taken (`taken`), both gathered by the
    caller before it decides."""

    deployment_id: str
    state: str
    """running, paused or done."""
    published: bool
    """The router gives the step's share (the step's analysis runs)."""
    step: int
    strategy: Canary
    step_started_at: datetime | None = None
    checks: dict[str, str] = field(default_factory=dict)
    figures: Figures | None = None
    taken: tuple[dict, ...] = ()

    @property
    def share(self) -> int:
        return self.strategy.steps[self.step]

    def elapsed(self, now: datetime) -> float:
        """Seconds the step has run at `now` (0 before it is published)."""
        return (now - self.step_started_at).total_seconds() if self.step_started_at is not None else 0.0


@dataclass(frozen=True)
class EnvironmentState:
    """What a decision reads of one environment: whether it is behind the router, and its canary in progress."""

    routed: bool = False
    canary: CanaryView | None = None


@dataclass(frozen=True)
class Order:
    """A deployment to make: an order's (`order_of` a gate.passed or a rollback.ordered), a reconfiguration's, a
    restore's or one a rebuild found in flight."""

    target: Target
    strategy: Strategy


@dataclass(frozen=True)
class Deploy:
    """Deploy `target` with `strategy` (rolling, or through the router)."""

    target: Target
    strategy: Strategy


@dataclass(frozen=True)
class Publish:
    """Give the canary its step's share at the router; the step's analysis begins."""


@dataclass(frozen=True)
class Wait:
    """Look again in `seconds` (the step's interval is not over, it has too few requests, or a measurement is due
    later)."""

    seconds: float


@dataclass(frozen=True)
class Advance:
    """The step passed: on to step `step` (published next), with the checks so far."""

    step: int
    checks: dict[str, str]


@dataclass(frozen=True)
class Complete:
    """All traffic to the canary, checked through the router: verified (or aborted by that check)."""

    checks: dict[str, str]


@dataclass(frozen=True)
class Abort:
    """Traffic back to the serving lane, the canary stopped, the deployment failed with `reason`."""

    reason: str
    checks: dict[str, str]
    superseded_by: str | None = None


@dataclass(frozen=True)
class Hold:
    """The canary changes state without moving traffic: paused (`recorded` paused; by an operator, or on an
    inconclusive metric, `because`) or running again (`recorded` resumed; its step published and judged afresh)."""

    state: str
    recorded: str
    checks: dict[str, str]
    by: str | None = None
    because: str | None = None


@dataclass(frozen=True)
class Ignore:
    """Nothing to do, and why (logged)."""

    why: str


Move = Deploy | Publish | Wait | Advance | Complete | Abort | Hold | Ignore


def decide(state: EnvironmentState, event: Event | Order | None, now: datetime) -> list[Move]:
    """The moves one input calls for in an environment at `now`: a deployment (an order, gate.passed or
    rollback.ordered, or an `Order` made by the deployer) supersedes the canary in progress unless it is that very
    canary's (a redelivered order); an operator's canary command; None: a look at the canary in progress (its step
    published, judged, moved on)."""
    if event is None:
        return [_look(state.canary, now)] if state.canary is not None else []
    if isinstance(event, Event) and isinstance(event.data, CanaryCommanded):
        return [_command(state.canary, event.data)]
    order = Order(*found) if isinstance(event, Event) and (found := order_of(event)) is not None else event
    if not isinstance(order, Order):
        return []
    target, strategy = order.target, order.strategy
    moves: list[Move] = []
    canary = state.canary
    if canary is not None and canary.state != "done":
        if canary.deployment_id == target.deployment_id:
            return [Ignore("this order's canary is in progress: it goes on")]
        moves.append(Abort(f"superseded at {canary.share}% of traffic by the deployment of {target.version} "
                           f"({target.purpose})", dict(canary.checks), superseded_by=target.deployment_id))
    return [*moves, Deploy(target, strategy_for(strategy, target, state.routed))]


def _command(canary: CanaryView | None, command: CanaryCommanded) -> Move:
    """An operator's pause, resume, abort or promote-now of the canary; one that finds no canary it applies to
    (none in progress, a pause of a paused one) changes nothing."""
    wanted = {"pause": ("running",), "resume": ("paused",)}.get(command.action, ("running", "paused"))
    if canary is None or canary.state not in wanted:
        return Ignore(f"{command.action}: " + ("no canary in progress" if canary is None else f"the canary is "
                                                                                              f"{canary.state}"))
    said = f" ({command.reason})" if command.reason else ""
    by = command.requested_by
    if command.action == "abort":
        return Abort(f"aborted by {by} at {canary.share}% of traffic{said}",
                     {**canary.checks, "aborted_by": by, "aborted_at_share": f"{canary.share}%"})
    if command.action == "promote":
        return Complete({**canary.checks, "promoted_by": by, "promoted_at_share": f"{canary.share}%"})
    if command.action == "pause":
        return Hold("paused", "paused", dict(canary.checks), by=by)
    return Hold("running", "resumed", dict(canary.checks), by=by)


def _look(canary: CanaryView, now: datetime) -> Move:
    """A running canary's next move: publish its step; fail or pause it on a metric; wait for its interval, its
    requests or a measurement; fail it on its figures; advance it, or complete it before the last share."""
    if canary.state != "running":
        return Ignore(f"the canary is {canary.state}")
    if not canary.published:
        return Publish()
    analysis = canary.strategy.analysis
    elapsed = canary.elapsed(now)
    verdicts = {metric.name: measurements.outcome(metric, canary.taken) for metric in analysis.metrics}
    metric_checks = {f"step_{canary.share}_metric_{name}": text for name, (_, text) in verdicts.items()}
    bad = next(((kind, said) for kind, said in verdicts.values() if kind in ("failed", "inconclusive")), None)
    if bad is not None:
        kind, said = bad
        checks = {**canary.checks, **metric_checks}
        if kind == "inconclusive" and analysis.on_inconclusive == "pause":
            return Hold("paused", "paused", {**checks, "paused_because": said}, because=said)
        return Abort(f"canary analysis at {canary.share}% of traffic: {said}",
                     {**checks, "aborted_at_share": f"{canary.share}%"})
    figures = canary.figures or Figures(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    wait = step_wait(elapsed, figures.requests, analysis.interval, analysis.min_requests, analysis.max_wait)
    measuring = measurements.next_due(analysis.metrics, canary.taken, elapsed)
    if wait > 0 or measuring is not None:
        return Wait(max(min(w for w in (wait if wait > 0 else None, measuring) if w is not None), 0.05))
    checks = {**canary.checks, **{f"step_{canary.share}_{key}": value for key, value in figures.as_checks().items()},
              **metric_checks}
    failure = judge(figures, Thresholds(analysis.max_error_rate, analysis.max_p99_ms, analysis.min_requests))
    if failure is not None:
        return Abort(f"canary analysis at {canary.share}% of traffic: {failure}",
                     {**checks, **figures.as_checks(), "aborted_at_share": f"{canary.share}%"})
    following = canary.step + 1
    if canary.strategy.steps[following] == 100:
        return Complete(checks)
    return Advance(following, checks)
