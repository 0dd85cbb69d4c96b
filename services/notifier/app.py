"""Builds the notifier's FastStream app from settings (no work at import)."""

from faststream import FastStream

from services.notifier.config import NotificationsFile
from services.notifier.dead_letters import DeadLetterWatcher
from services.notifier.handlers import NotifierHandlers
from services.notifier.sender import Sender
from shared.contracts import topics
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    """The notifier app: follows gates, deployments and rollbacks, and the dead-letter topic; delivers webhooks in
    the background."""
    runtime = ServiceRuntime("notifier", settings)
    notifications = NotificationsFile(runtime.settings.notifications_file, runtime.settings.webhook_secrets_dir)
    handlers = NotifierHandlers(runtime, notifications)
    runtime.background("webhooks", Sender(runtime, notifications).step)
    runtime.background("dead-letters", DeadLetterWatcher(runtime, notifications).step)
    runtime.consume([topics.GATES, topics.DEPLOYMENTS, topics.ROLLBACKS], handlers.handle,
                    description="gate.pending (approval needed), verification.failed, drift.detected and rollbacks: "
                                "one webhook delivery per subscription that wants it.")
    return runtime.app
