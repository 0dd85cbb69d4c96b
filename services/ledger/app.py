"""Builds the ledger service's FastStream app from settings (no work at import)."""

from faststream import FastStream

from services.ledger.handlers import LedgerHandlers
from shared import topics
from shared.runtime import ServiceRuntime
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    """The ledger app: consumes every topic but the dead-letter topic."""
    runtime = ServiceRuntime("ledger", settings)
    handlers = LedgerHandlers(runtime)
    every_topic = [spec.name for spec in topics.ALL_TOPICS if spec.name != topics.DLQ]
    runtime.consume(every_topic, handlers.handle, description="Every event, to the hash-chained ledger.")
    return runtime.app
