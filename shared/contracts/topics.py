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
        """The topic-level configs the stack enforces. Records carry the broker's time (LogAppendTime), which no
        producer can set: an event's claimed time is judged against it, the same live and in a replay."""
        return {"retention.ms": str(self.retention_ms), "max.message.bytes": str(self.max_message_bytes),
                "message.timestamp.type": "LogAppendTime"}


EVENT_TOPICS = (BUILDS, EVIDENCE, PIPELINES, ARTIFACTS, REQUESTS, GATES, DEPLOYMENTS, OPERATIONS, ROLLBACKS)


def all_topics(partitions: int = 3) -> tuple[TopicSpec, ...]:
    """Every topic, the event topics with `partitions` partitions each; the dead-letter topic has one."""
    return (*(TopicSpec(name, partitions) for name in EVENT_TOPICS),
            TopicSpec(DLQ, 1, max_message_bytes=DLQ_MAX_MESSAGE_BYTES))


ALL_TOPICS: tuple[TopicSpec, ...] = all_topics()
"""The topics with the default layout (names and configs; the stack's partition count is a setting)."""


@dataclass(frozen=True)
class Principal:
    """A Kafka principal (SASL/SCRAM user): the topics it may produce to and read, and its consumer group."""

    name: str
    produces: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    group: str | None = None
    groups: tuple[str, ...] = ()
    """Further consumer groups of its own (the notifier follows the dead-letter topic in a second one)."""


SERVICE_PRINCIPALS: tuple[Principal, ...] = (
    Principal("intake", produces=(ARTIFACTS, REQUESTS, DLQ), reads=(BUILDS, PIPELINES), group="intake"),
    Principal("gates", produces=(REQUESTS, GATES, DLQ),
              reads=(PIPELINES, ARTIFACTS, REQUESTS, EVIDENCE, OPERATIONS, DEPLOYMENTS), group="gates"),
    Principal("deployer", produces=(DEPLOYMENTS, DLQ), reads=(GATES, ROLLBACKS, PIPELINES, OPERATIONS, DEPLOYMENTS),
              group="deployer"),
    Principal("rollback", produces=(ROLLBACKS, DLQ), reads=(DEPLOYMENTS, OPERATIONS), group="rollback"),
    Principal("ledger", produces=(DLQ,), reads=EVENT_TOPICS, group="ledger"),
    Principal("notifier", produces=(DLQ,), reads=(GATES, DEPLOYMENTS, ROLLBACKS, DLQ), group="notifier",
              groups=("notifier-dead-letters",)),
)
"""One principal per service: each fact is accepted only from the service that states it."""

PRINCIPALS: tuple[Principal, ...] = (
    *SERVICE_PRINCIPALS,
    Principal("ci", produces=(BUILDS, EVIDENCE)),
    Principal("api", produces=(OPERATIONS, PIPELINES), reads=(*EVENT_TOPICS, DLQ)),
)
"""Every principal but the broker's own `admin` (a super user: it creates topics, credentials and ACLs).

`ci` is every CI system (build.completed, evidence.recorded) and reads nothing; `api` states what
operators decided (approvals, rollbacks, pipelines) and reads every topic to answer them."""
ADMIN = "admin"


def principal(name: str) -> Principal:
    """The principal called `name` (KeyError if there is none)."""
    for candidate in PRINCIPALS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
