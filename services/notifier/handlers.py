"""The notifier's handler: an event worth a message becomes one delivery per subscription that wants it, kept in
the same transaction as the event's inbox row (so a redelivered or replayed event is delivered once); the sender
(services/notifier/sender.py) delivers it."""

import asyncpg

from services.notifier.config import NotificationsFile
from services.notifier.domain import Subscription, delivery_id, message, notice_of, wanted
from shared.contracts.events import Event
from shared.platform.consumer import UnitOfWork
from shared.platform.runtime import ServiceRuntime


INSERT_DELIVERY = (
    "insert into deliveries (delivery_id, subscription, url, body, content_type, event_id, event_type, topic, kind, "
    "max_attempts) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) on conflict do nothing")
"""One delivery per subscription and event (or dead letter): a second insert of the same one adds nothing."""


def delivery(subscription: Subscription, event_id: str, event_type: str, topic: str, kind: str, body: bytes,
             content_type: str) -> tuple:
    """The arguments of INSERT_DELIVERY for what is sent to `subscription` about `event_id`."""
    return (delivery_id(subscription.name, event_id), subscription.name, subscription.url, body, content_type,
            event_id, event_type, topic, kind, subscription.max_attempts)


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
                await conn.execute(INSERT_DELIVERY, *delivery(subscription, event.id, event.envelope.type,
                                                              event.data.topic, notice.kind, body, content_type))
            return []

        await self.runtime.once(event, work, unit)
