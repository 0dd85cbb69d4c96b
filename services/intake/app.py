"""Builds the intake service's FastStream app from settings (no work at import)."""

from faststream import FastStream

from services.intake.handlers import IntakeHandlers
from shared.contracts import topics
from shared.artifacts import ArtifactStore
from shared.contracts.events import ArtifactRegistered, ArtifactRejected, ArtifactTagMoved, PromotionRequested
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    """The intake app: consumes builds and pipelines, emits registrations and first promotions."""
    runtime = ServiceRuntime("intake", settings)
    handlers = IntakeHandlers(runtime, ArtifactStore.from_settings(runtime.settings))
    runtime.consume(
        [topics.BUILDS, topics.PIPELINES],
        handlers.handle,
        description="build.completed from CI; pipeline.applied to learn each service's first environment.",
        prepare=handlers.prepare,
    )
    runtime.background("tags", handlers.check_tags)
    runtime.emits(ArtifactRegistered, ArtifactRejected, ArtifactTagMoved, PromotionRequested)
    return runtime.app
