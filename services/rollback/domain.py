"""Rollback decisions, pure: which release does an environment return to?"""

from dataclasses import dataclass


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
