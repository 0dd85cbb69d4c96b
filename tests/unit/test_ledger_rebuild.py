"""Unit tests for the rebuild's batching: each table's changes keep their order; runs of one statement merge."""

from services.ledger.rebuild import runs_per_table


def test_runs_keep_each_tables_order_and_merge_consecutive_equal_statements():
    changes = [
        ("waiting", "upsert waiting", ("a", 1)),
        ("environments", "upsert environments", ("a", "dev")),
        ("waiting", "upsert waiting", ("b", 1)),
        ("waiting", "delete waiting", ("a",)),
        ("environments", "upsert environments", ("b", "dev")),
        ("waiting", "upsert waiting", ("a", 2)),
    ]
    assert runs_per_table(changes) == [
        ("upsert waiting", [("a", 1), ("b", 1)]),
        ("delete waiting", [("a",)]),          # the delete stays between the upserts it separates
        ("upsert waiting", [("a", 2)]),
        ("upsert environments", [("a", "dev"), ("b", "dev")]),
    ]


def test_no_changes_no_runs():
    assert runs_per_table([]) == []
