"""What CI publishes from the CLI (build.completed, evidence.recorded) as the Kafka principal `ci`."""

import functools
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from cli.errors import CliError
from shared.contracts import limits
from shared.artifacts import file_digest
from shared.platform.client import Publisher
from shared.contracts.events import (Artifact, BuildCompleted, Event, EventData, EvidenceRecorded, PipelineApplied,
                                     new_event)
from shared.contracts.pipeline import PipelineDefinition
from shared.platform.settings import Settings

SOURCE = "/promote/cli"


def _one_line(builder: Callable[..., EventData]) -> Callable[..., EventData]:
    """The builder, with invalid input (a bad name, version, `--as`…) refused as one CliError line."""
    @functools.wraps(builder)
    def build(*args, **kwargs) -> EventData:
        try:
            return builder(*args, **kwargs)
        except ValidationError as error:
            raise CliError(limits.first_reason(error, located=False)) from None
    return build


async def publish(settings: Settings, data: EventData, correlation_id: str | None = None) -> Event:
    """Publish one event and return it once the broker acknowledged it."""
    event = new_event(data, source=SOURCE, correlation_id=correlation_id)
    async with Publisher(settings) as publisher:
        await publisher.publish(event)
    return event


@_one_line
def pipeline_applied(definition: PipelineDefinition, applied_by: str) -> PipelineApplied:
    """The event that makes `definition` the service's current pipeline (versioned by content hash)."""
    return PipelineApplied(service=definition.service, pipeline_version=definition.content_hash,
                           definition=definition.model_dump(mode="json"), applied_by=applied_by)


@_one_line
def build_completed(service: str, version: str, path: Path | None, uri: str | None, digest: str | None,
                    commit: str, author: str, checks: dict[str, str]) -> BuildCompleted:
    """What CI publishes after a build: a file artifact is hashed here when no digest is given."""
    if path is not None:
        uri = path.resolve().as_uri()
        digest = digest or file_digest(path)
    return BuildCompleted(service=service, version=version,
                          artifact=Artifact(kind="file", uri=uri, digest=digest),
                          commit=commit, author=author, checks=checks)


async def image_build_completed(settings: Settings, service: str, version: str, image: str, digest: str | None,
                                commit: str, author: str, checks: dict[str, str]) -> BuildCompleted:
    """What CI publishes after pushing an image: its manifest digest as the registry gives it now (asked as
    the registry user `ci`), or `digest` when CI knows it (intake checks it either way)."""
    from shared.platform.credentials import MissingCredential
    from shared.oci import Registry, RegistryError, RegistryUnavailable, parse_reference

    try:
        ref = parse_reference(image)
    except ValueError as error:
        raise CliError(str(error)) from None
    if digest is None:
        try:
            async with Registry.from_settings(settings, "ci") as registry:
                digest = await registry.digest_of(ref)
        except (RegistryError, RegistryUnavailable, MissingCredential) as error:
            raise CliError(str(error)) from None
    return BuildCompleted(service=service, version=version, artifact=Artifact(kind="oci", uri=image, digest=digest),
                          commit=commit, author=author, checks=checks)


def into_drop(settings: Settings, path: Path) -> Path:
    """The artifact file where intake may read it: itself when under an artifact root, else a copy the
    caller makes (with its own permissions) in the drop directory."""
    resolved = path.resolve()
    if any(resolved.is_relative_to(root.resolve()) for root in settings.artifact_roots):
        return resolved
    target = settings.drop_dir / "cli" / f"{uuid.uuid4().hex[:12]}-{resolved.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(resolved, target)
    return target


@_one_line
def evidence(service: str, version: str, digest: str, env: str, check: str, result: str,
             url: str | None) -> EvidenceRecorded:
    """A test runner's or scanner's result for a digest in an environment."""
    return EvidenceRecorded(service=service, version=version, digest=digest, env=env, check=check,
                            result=result, url=url)
