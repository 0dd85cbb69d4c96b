"""The state digest names a projection state: the same rows give the same digest, any change another."""

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.ledger.state import digest_rows

AT = datetime(2026, 11, 26, 9, 52, 57, 778000, tzinfo=UTC)


def state() -> dict[str, list[dict]]:
    """Rows as `state_digest` reads them: jsonb parsed, timestamps as datetimes."""
    return {
        "pipelines": [
            {"service": "payments", "pipeline_version": "sha256:" + "a" * 64, "environments": ["dev", "prod"]},
            {"service": "billing", "pipeline_version": "sha256:" + "b" * 64, "environments": ["dev"]},
        ],
        "environments": [
            {"service": "payments", "env": "dev", "version": "2.4.0", "digest": "sha256:" + "c" * 64,
             "config_version": "sha256:" + "d" * 64, "state": "verified", "updated_at": AT},
            {"service": "payments", "env": "prod", "version": None, "digest": None, "config_version": None,
             "state": "failed", "updated_at": AT + timedelta(seconds=1)},
        ],
        "waiting": [
            {"service": "payments", "env": "prod", "version": "2.5.0", "digest": "sha256:" + "e" * 64,
             "outcome": "pending", "reasons": ["waiting for 1 approval(s)"]},
        ],
        "artifacts": [
            {"service": "payments", "version": "2.4.0", "digest": "sha256:" + "c" * 64, "author": "alice"},
            {"service": "payments", "version": "2.5.0", "digest": "sha256:" + "e" * 64, "author": "dana"},
        ],
    }


def shuffled(tables: dict[str, list[dict]], seed: int) -> dict[str, list[dict]]:
    """The same rows with tables, rows and columns in another order."""
    rng = random.Random(seed)
    names = list(tables)
    rng.shuffle(names)
    result = {}
    for name in names:
        rows = [dict(rng.sample(list(row.items()), len(row))) for row in tables[name]]
        rng.shuffle(rows)
        result[name] = rows
    return result


def test_the_digest_is_a_sha256_that_does_not_depend_on_the_order_of_tables_rows_or_columns():
    expected = digest_rows(state())
    assert expected.startswith("sha256:") and len(expected) == len("sha256:") + 64
    assert all(digest_rows(shuffled(state(), seed)) == expected for seed in range(20))


def test_a_timestamp_is_the_same_instant_whatever_its_time_zone():
    moved = state()
    moved["environments"][0]["updated_at"] = AT.astimezone(timezone(timedelta(hours=2)))
    assert digest_rows(moved) == digest_rows(state())


@pytest.mark.parametrize("table, index, column, value", [
    ("pipelines", 0, "environments", ["prod", "dev"]),
    ("environments", 0, "state", "deployed"),
    ("environments", 1, "updated_at", AT + timedelta(microseconds=1)),
    ("environments", 1, "version", ""),
    ("waiting", 0, "reasons", []),
    ("artifacts", 1, "author", "Dana"),
])
def test_any_changed_value_changes_the_digest(table, index, column, value):
    changed = state()
    changed[table][index][column] = value
    assert digest_rows(changed) != digest_rows(state())


def test_a_missing_or_an_extra_row_changes_the_digest():
    fewer, more = state(), state()
    fewer["artifacts"].pop()
    more["waiting"].append({**more["waiting"][0], "version": "2.6.0"})
    assert len({digest_rows(state()), digest_rows(fewer), digest_rows(more)}) == 3


def test_a_row_cannot_move_to_another_table_unnoticed():
    moved = state()
    moved["waiting"] = []
    moved["artifacts"] = state()["artifacts"] + state()["waiting"]
    assert digest_rows(moved) != digest_rows(state())
