"""Dead letters as notifications: a consumer of the dead-letter topic in its own group (`notifier-dead-letters`),
apart from the notifier's event consumer because its records are not events (any bytes a consumer gave up, with
the `dlq.*` headers saying why). Each record wanted by a subscription of kind `dead_letter` becomes a delivery in
one transaction, then its offset is committed: a notifier stopped in between finds the deliveries already there
(`on conflict do nothing`), so each is sent once. The group's first run reads the topic from its start (so a
record dead-lettered while the notifier was starting is not missed); from then on it goes on from its offsets.
"""

import asyncio

from aiokafka import AIOKafkaConsumer

from services.notifier.config import NotificationsFile
from services.notifier.domain import DeadLetter, dead_letter_message, dead_letter_notice, wanted
from services.notifier.handlers import INSERT_DELIVERY, delivery
from shared.contracts import topics
from shared.platform.credentials import kafka_options
from shared.platform.runtime import ServiceRuntime

GROUP = "notifier-dead-letters"
MAX_RECORDS = 200


class DeadLetterWatcher:
    """The background step: follows the dead-letter topic until cancelled (a failure: stopped, started again)."""

    def __init__(self, runtime: ServiceRuntime, notifications: NotificationsFile) -> None:
        self.runtime, self.notifications = runtime, notifications

    async def step(self) -> float:
        consumer = AIOKafkaConsumer(topics.DLQ, **kafka_options(self.runtime.settings), group_id=GROUP,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
                records = [record for batch in batches.values() for record in batch]
                if records:
                    await self.record(records)
                    await consumer.commit()
        finally:
            await asyncio.shield(consumer.stop())

    async def record(self, records) -> int:
        """The deliveries the records make (one per record and subscription that wants it); how many."""
        subscriptions = self.notifications.load().subscriptions
        rows = []
        for record in records:
            headers = {name: value.decode("utf-8", "replace") for name, value in record.headers or ()}
            letter = DeadLetter.of(record.partition, record.offset, headers, record.value or b"")
            notice = dead_letter_notice(letter)
            if notice is None:
                continue
            for subscription in subscriptions:
                if wanted(subscription, notice):
                    body, content_type = dead_letter_message(subscription, letter, notice)
                    rows.append(delivery(subscription, letter.id, "dead_letter.recorded", topics.DLQ, notice.kind,
                                         body, content_type))
        if rows:
            async with self.runtime.pool.acquire() as conn:
                await conn.executemany(INSERT_DELIVERY, rows)
        return len(rows)
