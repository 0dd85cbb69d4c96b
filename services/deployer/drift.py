"""Drift, pure: what differs between the release the deployer promoted into an environment and what runs there.

A driver reports what it finds in a slot (`Observed`: the deployer's processes or containers, what they run,
their environment, what /version answers, and anything foreign on the slot's port); `differences` turns that
and the promoted release (`Expected`) into one readable line per difference, and `next_drift` decides whether
that is news (drift.detected), the end of a drift (drift.resolved) or nothing.
"""

import re
from dataclasses import dataclass, field

from services.deployer.domain import Config

MAX_DIFFERENCES = 20
MAX_LINE = 300
SHOWN = 60
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Expected:
    """The release the deployer promoted into an environment and verified there: what should run in its slot."""

    service: str
    env: str
    slot: str
    """The environment (`prod`) or, behind the router, its live lane (`prod.blue`)."""
    version: str
    digest: str
    config_version: str
    driver: str
    port: int
    location: str | None = None
    replicas: int = 1
    variables: dict[str, str | None] = field(default_factory=dict)
    """Environment variables the release runs with: their value, or None for a secret (only its presence is
    compared; its value is never read into a difference)."""


@dataclass(frozen=True)
class Instance:
    """One process or container of the slot, as the driver found it."""

    name: str
    """`process 4242`, `container promote-payments--prod--0`."""
    state: str
    """`running`, or what it is instead (`not running`, `exited with code 137`)."""
    digest: str | None = None
    """The sha256 of the file the process runs (local driver)."""
    image_digests: tuple[str, ...] = ()
    """Where the container's image is known by digest (`registry/repository@sha256:…`; container driver)."""
    image: str | None = None
    """The container's image id, for a difference when it has no repository digest."""
    variables: dict[str, str] | None = None
    """The expected variables as the instance has them (a missing key: not set); None: could not be read."""
    version: str | None = None
    """What GET /version answered as `version`."""
    version_error: str | None = None
    """Why GET /version gave no version."""
    started_by_deployer: bool = True
    """Named and numbered as the deployer names the slot's replicas (else someone else made it)."""

    @property
    def running(self) -> bool:
        """The process or container runs."""
        return self.state == "running"


@dataclass(frozen=True)
class Observed:
    """What a driver found in a slot."""

    instances: tuple[Instance, ...] = ()
    foreign: tuple[str, ...] = ()
    """Things the deployer did not start that take the slot's port, one line each."""
    port_version: str | None = None
    """What GET /version on the slot's port answered (looked at when none of the deployer's instances runs)."""


def expected_variables(env: str, config: Config, version: str, digest: str,
                       config_version: str) -> dict[str, str | None]:
    """The variables a release runs with (as `domain.process_environment` sets them), PORT aside (the container's
    differs from the host's); secrets as None."""
    variables: dict[str, str | None] = {"APP_ENV": env}
    for key, value in config.items():
        variables[key] = None if isinstance(value, dict) else value
    variables.update(BUILD_VERSION=version, ARTIFACT_DIGEST=digest, CONFIG_VERSION=config_version)
    return variables


def differences(expected: Expected, observed: Observed) -> list[str]:
    """One line per way in which what runs differs from what was promoted (empty: in sync), at most
    MAX_DIFFERENCES lines of at most MAX_LINE printable characters."""
    found: list[str] = []
    ours = [instance for instance in observed.instances if instance.started_by_deployer]
    running = [instance for instance in ours if instance.running]
    if not ours:
        what = "its containers are" if expected.driver == "container" else "its process is"
        found.append(f"nothing of {expected.version} runs in {expected.slot}: {what} gone")
    found += [f"{instance.name} {instance.state}" for instance in ours if not instance.running]
    if ours and len(ours) != expected.replicas:
        found.append(f"{len(ours)} containers of {expected.slot} exist, {expected.replicas} promoted")
    found += [f"{instance.name} is labelled for {expected.slot} but was not started by the deployer"
              for instance in observed.instances if not instance.started_by_deployer]
    for instance in running:
        found += _release_differences(expected, instance)
    found += observed.foreign
    if not running and observed.port_version is not None:
        found.append(f"port {expected.port} answers version {_shown(observed.port_version)} from something the "
                     f"deployer did not start (promoted {_shown(expected.version)})")
    return bounded(found)


def _release_differences(expected: Expected, instance: Instance) -> list[str]:
    """How one running instance differs from the promoted release: bytes, environment, /version."""
    found = []
    if expected.driver == "container":
        if expected.location not in instance.image_digests:
            found.append(f"{instance.name} runs image {image_name(instance.image_digests, instance.image)}, not the "
                         f"promoted {expected.location}")
    elif instance.digest != expected.digest:
        found.append(f"{instance.name} runs a file with digest {instance.digest}, not the promoted {expected.digest}")
    if instance.variables is not None:
        for key, value in expected.variables.items():
            found += _variable_difference(instance, key, value)
    if instance.version_error is not None:
        found.append(f"{instance.name}: GET /version {instance.version_error}")
    elif instance.version != expected.version:
        found.append(f"{instance.name}: GET /version answers version {_shown(instance.version)}, "
                     f"promoted {_shown(expected.version)}")
    return found


def _variable_difference(instance: Instance, key: str, promoted: str | None) -> list[str]:
    """A variable not set, or set to another value than promoted. Only digests that differ are shown: another value
    may be anything (a secret put there by hand), so it is never copied into an event."""
    assert instance.variables is not None
    actual = instance.variables.get(key)
    if actual is None:
        return [f"{instance.name}: {key} is not set" + ("" if promoted is None else f" (promoted {_shown(promoted)})")]
    if promoted is None or actual == promoted:
        return []
    if _DIGEST.match(actual):
        return [f"{instance.name}: {key} is {actual}, promoted {promoted}"]
    return [f"{instance.name}: {key} differs from the promoted {_shown(promoted)}"]


def image_name(digests: tuple[str, ...], image: str | None) -> str:
    """An image as a difference names it: its first `registry/repository@digest` (the digest is the bytes; one
    image may have been pulled under several names), else its id."""
    if digests:
        return digests[0] + (f" (and {len(digests) - 1} more names)" if len(digests) > 1 else "")
    return image or "an unknown image"


def bounded(lines: list[str]) -> list[str]:
    """Each line printable and at most MAX_LINE characters; at most MAX_DIFFERENCES lines, the last one saying
    how many more there were."""
    cleaned = [_printable(line)[:MAX_LINE] for line in lines]
    if len(cleaned) <= MAX_DIFFERENCES:
        return cleaned
    kept = cleaned[:MAX_DIFFERENCES - 1]
    return kept + [f"… and {len(cleaned) - len(kept)} more"]


def confirmed(first: list[str], second: list[str]) -> list[str]:
    """The differences found by two looks in a row (a transient one, e.g. a /version that timed out once under
    load, is not drift)."""
    return [line for line in second if line in first]


@dataclass(frozen=True)
class DriftState:
    """An environment's drift as last recorded: how many drifts were detected, and what differs now."""

    generation: int = 0
    differences: tuple[str, ...] | None = None
    """None: in sync."""


def next_drift(state: DriftState, found: list[str]) -> tuple[DriftState, str | None]:
    """(the new state, "detected" | "resolved" | None): a drift is detected once per change of what differs,
    resolved once when nothing differs any more, and nothing is said while it stays as it was."""
    if not found:
        if state.differences is None:
            return state, None
        return DriftState(state.generation, None), "resolved"
    if state.differences == tuple(found):
        return state, None
    return DriftState(state.generation + 1, tuple(found)), "detected"


def _shown(value: str | None) -> str:
    if value is None:
        return "none"
    return repr(value if len(value) <= SHOWN else value[:SHOWN] + "…")


def _printable(line: str) -> str:
    return "".join(c if c.isprintable() else " " for c in line)
