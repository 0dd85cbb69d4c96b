"""What the ledger reads: every topic but the dead-letter topic (the service and a replay share this list)."""

from shared.contracts import topics


def consumed_topics() -> list[str]:
    """The names of the topics the ledger consumes."""
    return [spec.name for spec in topics.ALL_TOPICS if spec.name != topics.DLQ]
