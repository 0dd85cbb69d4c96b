"""Write side for the CLI: operator commands and CI reports become events on the bus."""

from pathlib import Path

from shared.artifacts import file_digest
from shared.client import EventWatcher, Publisher, matches
from shared.events import (ApprovalGranted, ApprovalRejected, Artifact, BuildCompleted, Event, EventData,
                           EvidenceRecorded, PipelineApplied, RollbackRequested, new_event)
from shared.pipeline import PipelineDefinition
from shared.settings import Settings

SOURCE = "/promote/cli"


async def publish(settings: Settings, data: EventData, correlation_id: str | None = None) -> Event:
    """Publish one event and return it once the broker acknowledged it."""
    event = new_event(data, source=SOURCE, correlation_id=correlation_id)
    async with Publisher(settings.kafka_bootstrap) as publisher:
        await publisher.publish(event)
    return event


def pipeline_applied(definition: PipelineDefinition, applied_by: str) -> PipelineApplied:
    """The event that makes `definition` the service's current pipeline (versioned by content hash)."""
    return PipelineApplied(service=definition.service, pipeline_version=definition.content_hash,
                           definition=definition.model_dump(mode="json"), applied_by=applied_by)


def build_completed(service: str, version: str, path: Path | None, uri: str | None, digest: str | None,
                    commit: str, author: str, checks: dict[str, str]) -> BuildCompleted:
    """What CI publishes after a build: a file artifact is hashed here when no digest is given."""
    if path is not None:
        uri = path.resolve().as_uri()
        digest = digest or file_digest(path)
    return BuildCompleted(service=service, version=version,
                          artifact=Artifact(kind="file", uri=uri, digest=digest),
                          commit=commit, author=author, checks=checks)


def evidence(service: str, version: str, digest: str, env: str, check: str, result: str,
             url: str | None) -> EvidenceRecorded:
    """A test runner's or scanner's result for a digest in an environment."""
    return EvidenceRecorded(service=service, version=version, digest=digest, env=env, check=check,
                            result=result, url=url)


def decision(service: str, version: str, env: str, who: str, granted: bool, comment: str | None) -> EventData:
    """An approval or a rejection by a person."""
    model = ApprovalGranted if granted else ApprovalRejected
    return model(service=service, version=version, env=env, approver=who, comment=comment)


def rollback(service: str, env: str, who: str, reason: str | None) -> RollbackRequested:
    """An operator's request to return an environment to its last verified release."""
    return RollbackRequested(service=service, env=env, requested_by=who, reason=reason)


async def publish_and_wait(settings: Settings, data: EventData, outcomes: dict[str, dict], timeout: float) -> Event:
    """Publish, then wait for the first event among `outcomes` ({type: fields to match})."""
    async with EventWatcher(settings.kafka_bootstrap) as watcher:
        await publish(settings, data)
        checks = [matches(kind, **fields) for kind, fields in outcomes.items()]
        return await watcher.wait_for(lambda e: any(check(e) for check in checks), timeout,
                                      what=" or ".join(outcomes))
