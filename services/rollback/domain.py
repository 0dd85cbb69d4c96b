"""Rollback decisions, pure: which release does an environment return to, and when?

`decide(known, event)` is the whole of rollback's rules; the handler loads what is known of the event's
environment, decides, saves the decision and emits its events (services/rollback/handlers.py)."""

from dataclasses import dataclass

from shared.contracts.events import (DeploymentFailed, EnvironmentPruned, Event, EventData, RollbackCompleted,
                           RollbackFailed, RollbackOrdered, RollbackRequested, VerificationFailed,
                           VerificationPassed)


@dataclass(frozen=True)
class VerifiedRelease:
    """A release (digest + config version) that was verified in an environment."""

    version: str
    digest: str
    config: dict
    config_version: str
    driver: str = "local"
    location: str | None = None
    replicas: int = 1
    resources: dict | None = None


def choose_target(history: list[VerifiedRelease], current: tuple[str, str] | None) -> VerifiedRelease | None:
    """The newest verified release that is not what runs now (`current` = (digest, config version))."""
    for release in history:
        if (release.digest, release.config_version) != current:
            return release
    return None


def rolls_back_after_failure(purpose: str, superseded: bool = False) -> bool:
    """Whether a failed deployment of this purpose is answered by a rollback to the last verified release.

    A promotion or a reconfiguration brought something new that failed: yes. A rollback that fails ends as
    rollback.failed instead. A restore put back the release that was verified and drifted there: its failure
    says the environment (what was done to it by hand, a port taken, the engine) is at fault rather than the
    release, and an older release would meet the same fault; the environment stays failed and drifted for an
    operator (`promote rollback`, or a new promotion). A canary superseded by a newer deployment: no, that one
    is on its way (a rollback would replace it in turn)."""
    return purpose in ("promotion", "reconfigure") and not superseded


@dataclass(frozen=True)
class Current:
    """What an environment runs now, as the deployer last said, and whether it was verified."""

    version: str
    digest: str
    config_version: str
    state: str
    """verified or failed."""


@dataclass(frozen=True)
class Known:
    """What rollback knows of one environment: its verified releases (newest first) and what runs there."""

    history: tuple[VerifiedRelease, ...] = ()
    current: Current | None = None


@dataclass(frozen=True)
class Decision:
    """What one event changes in an environment's state, and the events it calls for."""

    verified: VerifiedRelease | None = None
    """A release to append to the environment's history."""
    current: Current | None = None
    """What runs there from now on."""
    forget: bool = False
    """The environment is gone (pruned): its history and current release go."""
    emit: tuple[EventData, ...] = ()


def decide(known: Known, event: Event) -> Decision:
    """Rollback's rules, pure: a verification is kept (a rollback's own one completes it), a failure orders a
    return to the last verified release when its purpose calls for one, a request orders one, a pruned
    environment is forgotten. The clock plays no part."""
    data = event.data
    match data:
        case VerificationPassed():
            completed = (RollbackCompleted(service=data.service, rollback_id=data.rollback_id, env=data.env,
                                           version=data.version, digest=data.digest),) \
                if data.purpose == "rollback" else ()
            return Decision(verified=verified_release(data), current=_current(data, "verified"), emit=completed)
        case VerificationFailed() | DeploymentFailed():
            now = _current(data, "failed")
            if data.purpose == "rollback":
                return Decision(current=now, emit=(RollbackFailed(
                    service=data.service, rollback_id=data.rollback_id, env=data.env,
                    reason=f"the rollback release failed: {data.reason}"),))
            if not rolls_back_after_failure(data.purpose, getattr(data, "superseded_by", None) is not None):
                return Decision(current=now)
            reason = f"{data.version} failed in {data.env}: {data.reason}"
            return Decision(current=now, emit=(order(Known(known.history, now), event.id, data.service, data.env,
                                                     reason, "rollback-service"),))
        case EnvironmentPruned():
            return Decision(forget=True)
        case RollbackRequested():
            reason = data.reason or f"requested by {data.requested_by}"
            return Decision(emit=(order(known, event.id, data.service, data.env, reason, data.requested_by),))
    return Decision()


def verified_release(data: VerificationPassed) -> VerifiedRelease:
    """The release a verification names, as rollback keeps it."""
    return VerifiedRelease(data.version, data.digest, dict(data.config), data.config_version, data.driver,
                           data.location, data.replicas,
                           None if data.resources is None else data.resources.model_dump(mode="json"))


def _current(data, state: str) -> Current:
    return Current(data.version, data.digest, data.config_version, state)


def order(known: Known, rollback_id: str, service: str, env: str, reason: str,
          requested_by: str) -> RollbackOrdered | RollbackFailed:
    """The order to deploy the last verified release that is not what runs now, or why there is none."""
    now = known.current
    target = choose_target(list(known.history), (now.digest, now.config_version) if now else None)
    if target is None:
        return RollbackFailed(service=service, rollback_id=rollback_id, env=env,
                              reason=f"no earlier verified release in {env} to return to")
    return RollbackOrdered(
        service=service, rollback_id=rollback_id, env=env, version=target.version, digest=target.digest,
        config=target.config, config_version=target.config_version, driver=target.driver,
        location=target.location, replicas=target.replicas, resources=target.resources,
        from_version=now.version if now else None, reason=reason, requested_by=requested_by)
