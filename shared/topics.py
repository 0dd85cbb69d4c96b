"""Kafka topic names and their layout; the only place a topic name is spelled."""

from dataclasses import dataclass

BUILDS = "promotion.builds"
EVIDENCE = "promotion.evidence"
PIPELINES = "promotion.pipelines"
ARTIFACTS = "promotion.artifacts"
REQUESTS = "promotion.requests"
GATES = "promotion.gates"
DEPLOYMENTS = "promotion.deployments"
OPERATIONS = "promotion.operations"
ROLLBACKS = "promotion.rollbacks"
DLQ = "promotion.dlq"


# A record accepted on a source topic must still fit, with its dead-letter headers, on the
# dead-letter topic and in one producer request (1 MiB): cap the source topics at 512 KiB.
SOURCE_MAX_MESSAGE_BYTES = 512 * 1024
DLQ_MAX_MESSAGE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the stack creates it: history is kept forever so it can be replayed."""

    name: str
    partitions: int
    retention_ms: int = -1
    max_message_bytes: int = SOURCE_MAX_MESSAGE_BYTES

    @property
    def configs(self) -> dict[str, str]:
        """The topic-level configs the stack enforces."""
        return {"retention.ms": str(self.retention_ms), "max.message.bytes": str(self.max_message_bytes)}


EVENT_TOPICS = (BUILDS, EVIDENCE, PIPELINES, ARTIFACTS, REQUESTS, GATES, DEPLOYMENTS, OPERATIONS, ROLLBACKS)


def all_topics(partitions: int = 3) -> tuple[TopicSpec, ...]:
    """Every topic, the event topics with `partitions` partitions each; the dead-letter topic has one."""
    return (*(TopicSpec(name, partitions) for name in EVENT_TOPICS),
            TopicSpec(DLQ, 1, max_message_bytes=DLQ_MAX_MESSAGE_BYTES))


ALL_TOPICS: tuple[TopicSpec, ...] = all_topics()
"""The topics with the default layout (names and configs; the stack's partition count is a setting)."""
