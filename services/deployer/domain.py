"""Deployer decisions, pure: what a deployment needs, and what its checks mean."""

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Running:
    """What the driver reports running in an environment's slot."""

    pid: int
    digest: str
    config_version: str
    alive: bool


class MissingSecret(Exception):
    """A config value refers to a secret that the secret store does not hold."""


def process_environment(target: Target, port: int, resolve_secret) -> dict[str, str]:
    """Environment variables for the app: its config (secrets resolved), plus what the deployer sets."""
    variables: dict[str, str] = {"APP_ENV": target.env}
    for key, value in target.config.items():
        if isinstance(value, dict):
            secret = resolve_secret(value["secret"])
            if secret is None:
                raise MissingSecret(f"secret {value['secret']!r} is not in the secret store")
            variables[key] = secret
        else:
            variables[key] = value
    variables.update(
        BUILD_VERSION=target.version,
        PORT=str(port),
        ARTIFACT_DIGEST=target.digest,
        CONFIG_VERSION=target.config_version,
    )
    return variables


def needs_start(target: Target, running: Running | None) -> bool:
    """False when the exact release already runs (a redelivered order re-attaches, never starts twice)."""
    if running is None or not running.alive:
        return True
    return (running.digest, running.config_version) != (target.digest, target.config_version)


def verification_failure(target: Target, checks: dict[str, str]) -> str | None:
    """The first failed check as a reason, or None when every check passed."""
    for name in ("process", "digest", "health", "version"):
        result = checks.get(name, "not run")
        if result != "passed":
            return f"{name}: {result}"
    return None
