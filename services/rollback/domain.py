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
