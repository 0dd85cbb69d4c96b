"""Builds the gates service's FastStream app from settings (no work at import)."""

from faststream import FastStream

from services.gates.handlers import GatesHandlers
from services.gates.timers import TimerLoop
from shared.contracts import topics
from shared.contracts.events import GateFailed, GatePassed, GatePending, PromotionRequested
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    """The gates app: judges promotions, requests the next environment after a verification, fires timers."""
    runtime = ServiceRuntime("gates", settings)
    handlers = GatesHandlers(runtime)
    runtime.background("timers", TimerLoop(runtime, handlers).fire_due)
    runtime.consume(
        [topics.PIPELINES, topics.ARTIFACTS, topics.REQUESTS, topics.EVIDENCE, topics.OPERATIONS, topics.DEPLOYMENTS],
        handlers.handle,
        description="Pipelines, registrations, promotion requests, evidence, approvals and verifications.",
    )
    runtime.emits(GatePassed, GatePending, GateFailed, PromotionRequested)
    return runtime.app
