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


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the stack creates it: history is kept forever so it can be replayed."""

    name: str
    partitions: int
    retention_ms: int = -1


ALL_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(BUILDS, 3),
    TopicSpec(EVIDENCE, 3),
    TopicSpec(PIPELINES, 3),
    TopicSpec(ARTIFACTS, 3),
    TopicSpec(REQUESTS, 3),
    TopicSpec(GATES, 3),
    TopicSpec(DEPLOYMENTS, 3),
    TopicSpec(OPERATIONS, 3),
    TopicSpec(ROLLBACKS, 3),
    TopicSpec(DLQ, 1),
)
