"""The notifier's handler: an event worth a message becomes one delivery per subscription that wants it, kept in
the same transaction as the event's inbox row (so a redelivered or replayed event is delivered once); the sender
(services/notifier/sender.py) delivers it."""

import asyncpg

from services.notifier.config import NotificationsFile
from services.notifier.domain import delivery_id, message, notice_of, wanted
from shared.contracts.events import Event
from shared.platform.consumer import UnitOfWork
from shared.platform.runtime import ServiceRuntime


class NotifierHandlers:
    """Turns the events subscribed to into deliveries."""

    def __init__(self, runtime: ServiceRuntime, notifications: NotificationsFile) -> None:
        self.runtime, self.notifications = runtime, notifications

    async def handle(self, event: Event, unit: UnitOfWork | None = None) -> None:
        notice = notice_of(event)
        if notice is None:
            return  # nobody's business: no transaction, no inbox row
        subscriptions = [s for s in self.notifications.load().subscriptions if wanted(s, notice)]
        if not subscriptions:
            return

        async def work(conn: asyncpg.Connection) -> list[Event]:
            for subscription in subscriptions:
                body, content_type = message(subscription, event, notice)
                await conn.execute(
                    "insert into deliveries (delivery_id, subscription, url, body, content_type, event_id, "
                    "event_type, topic, kind, max_attempts) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                    "on conflict do nothing",
                    delivery_id(subscription.name, event.id), subscription.name, subscription.url, body,
                    content_type, event.id, event.envelope.type, event.data.topic, notice.kind,
                    subscription.max_attempts)
            return []

        await self.runtime.once(event, work, unit)
