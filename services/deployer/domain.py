"""Deployer decisions, pure: what an order asks for and how it runs, what a deployment needs, what its checks
mean, which environments a new pipeline redeploys."""

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import TypeAdapter

from shared.contracts.events import Event, GatePassed, RollbackOrdered
from shared.contracts.pipeline import ROUTED_DRIVERS, BlueGreen, PipelineDefinition, Resources, Strategy

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
