"""The ledger's rebuild equals its live state only if each projection table is fed by the events of one topic
(services/ledger/rebuild.py): a table written from two topics would depend on how the topics interleave."""

from services.ledger.projection import statements
from shared.contracts.events import EVENT_TYPES
from tests.unit.test_fuzz_events import sample_event


def test_each_projection_table_is_fed_by_the_events_of_one_topic():
    feeders: dict[str, set[str]] = {}
    for kind, model in EVENT_TYPES.items():
        for table, _sql, _args in statements(sample_event(kind)):
            feeders.setdefault(table, set()).add(model.topic)
    assert {table: len(topics) for table, topics in feeders.items()} == {table: 1 for table in feeders}, feeders
    assert set(feeders) == {"pipelines", "artifacts", "waiting", "environments"}
