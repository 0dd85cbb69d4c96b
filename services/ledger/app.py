"""Builds the ledger service's FastStream app from settings (no work at import)."""

from faststream import FastStream

from services.ledger.checkpoints import Checkpointer
from services.ledger.handlers import LedgerHandlers
from services.ledger.topics import consumed_topics
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    """The ledger app: consumes every topic but the dead-letter topic."""
    runtime = ServiceRuntime("ledger", settings)
    handlers = LedgerHandlers(runtime)
    runtime.background("checkpoints", Checkpointer(runtime).step)
    runtime.consume(consumed_topics(), handlers.handle, description="Every event, to the hash-chained ledger.")
    return runtime.app
