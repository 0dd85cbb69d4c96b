"""Builds the rollback service's FastStream app from settings (no work at import)."""

from faststream import FastStream

from services.rollback.handlers import RollbackHandlers
from shared.contracts import topics
from shared.contracts.events import RollbackCompleted, RollbackFailed, RollbackOrdered
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    """The rollback app: follows verifications, orders rollbacks, reports their outcome."""
    runtime = ServiceRuntime("rollback", settings)
    handlers = RollbackHandlers(runtime)
    runtime.consume(
        [topics.DEPLOYMENTS, topics.OPERATIONS],
        handlers.handle,
        description="verification.* and deployment.failed from the deployer; rollback.requested from operators.",
    )
    runtime.emits(RollbackOrdered, RollbackCompleted, RollbackFailed)
    return runtime.app
