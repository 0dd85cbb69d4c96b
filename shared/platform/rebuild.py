"""Disaster recovery: a service whose schema is new rebuilds its state by reading its topics from the start.

When a service finds its schema missing (first start, or the schema was dropped), it points
its consumer group at the beginning of its topics before consuming. Every event is then
handled again against the empty state; the events it emits again carry the same ids
(derived from their causes), so other services ignore them as duplicates.
"""

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from shared.platform.backoff import retrying
from shared.platform.client import partitions_of

log = structlog.get_logger()


async def rewind_group(options: dict, group_id: str, topic_names: list[str], *, attempts: int = 40) -> int:
    """Commit the earliest offset of every partition for `group_id`; returns the partitions rewound.

    `options` are the aiokafka connection options (see shared.platform.credentials.kafka_options).

    Kafka accepts such a commit only while the group has no live member, so a member that was
    killed a moment ago (still within its session timeout) makes us retry with back-off.
    """
    consumer = AIOKafkaConsumer(**options, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, topic_names)
        consumer.assign(partitions)
        earliest = await consumer.beginning_offsets(partitions)
        async for attempt in retrying((KafkaError,), attempts, 0.5, 3.0, 1.5, event="rebuild.rewind_retry",
                                      group=group_id):
            with attempt:
                await consumer.commit(dict(earliest))
                log.warning("rebuild.group_rewound", group=group_id, partitions=len(partitions))
                return len(partitions)
    finally:
        await consumer.stop()
    return 0
