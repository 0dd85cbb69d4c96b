"""The ledger can be trusted: it knows where each entry came from, a replay rebuilds its projections
byte for byte, a hand-edited entry is named by the chain check, and the database refuses edits."""

import json

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.ledger.state import state_digest
from shared.platform.credentials import SUPERUSER, database_dsn, kafka_options
from shared.contracts.events import Event, EvidenceRecorded, parse_event
from tests.e2e.support import Scenario, promote, promote_async

pytestmark = pytest.mark.e2e

DEV_ONLY = """
service: {service}
environments:
  - name: dev
"""


async def promoted_to_dev(scenario: Scenario) -> Event:
    """Carry 1.0.0 into dev (the pipeline's only environment) and wait until the ledger has all of it.

    With dev the last environment nothing follows the verification, so the system is then quiet.
    """
    await scenario.apply_pipeline(DEV_ONLY)
    path, digest = scenario.build("1.0.0")
    await scenario.send(scenario.build_completed("1.0.0", path, digest))
    verified = await scenario.wait("verification.passed", env="dev", version="1.0.0")
    for event in scenario.watcher.seen(lambda e: e.data.service == scenario.service):
        await scenario.processed_by("ledger", event)
    return verified


async def ledger_connection(scenario: Scenario) -> asyncpg.Connection:
    """A connection to the ledger's schema (tests may look and, here, tamper)."""
    return await asyncpg.connect(database_dsn(scenario.settings, SUPERUSER), server_settings={"search_path": "ledger"})


async def tamper(scenario: Scenario, sql: str, *args) -> None:
    """Change the ledger's tables behind its back, as someone holding the database's superuser could."""
    conn = await ledger_connection(scenario)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def live_digest(scenario: Scenario) -> str:
    """The digest of the ledger's live projections, computed here rather than by the CLI."""
    conn = await ledger_connection(scenario)
    try:
        return await state_digest(conn)
    finally:
        await conn.close()


async def test_every_entry_records_the_kafka_position_of_the_record_it_came_from(scenario):
    await promoted_to_dev(scenario)
    entries = await scenario.query("ledger", "select event_id, topic, kafka_partition, kafka_offset from entries "
                                             "where service = $1 order by seq", scenario.service)
    assert len(entries) >= 7 and all(e["kafka_partition"] is not None for e in entries)
    consumer = AIOKafkaConsumer(**kafka_options(scenario.settings, "api"), enable_auto_commit=False)
    await consumer.start()
    try:
        for entry in entries:
            partition = TopicPartition(entry["topic"], entry["kafka_partition"])
            consumer.assign([partition])
            consumer.seek(partition, entry["kafka_offset"])
            record = (await consumer.getmany(partition, timeout_ms=10_000, max_records=1))[partition][0]
            assert parse_event(record.value).id == entry["event_id"]
    finally:
        await consumer.stop()


async def entry_count(scenario: Scenario) -> int:
    return (await scenario.query("ledger", "select count(*) as n from entries"))[0]["n"]


async def test_a_replay_rebuilds_the_projections_from_the_topics_into_the_same_state_and_the_ledger_goes_on(scenario):
    verified = await promoted_to_dev(scenario)
    for _attempt in range(3):
        # Other events may land meanwhile (e.g. the drift found once an earlier test's teardown stopped its apps):
        # they change the state, so the comparison with `before` holds only for a run during which none did.
        entries = await entry_count(scenario)
        before = await live_digest(scenario)
        status_before = promote("status", scenario.service, "--json")
        assert status_before.returncode == 0, status_before.stderr

        result = await promote_async("replay", "--rebuild", "--json")

        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        after = await live_digest(scenario)
        if report["entries"] == entries == await entry_count(scenario):
            break
    assert report["events"] > 0 and report["events"] == report["entries"]  # every entry's event, once
    assert report["identical"] is True and report["replaced"] is True
    assert report["live_digest"] == report["rebuilt_digest"] == before
    assert promote("status", scenario.service, "--json").stdout == status_before.stdout
    assert json.loads(status_before.stdout)["environments"]["dev"]["state"] == "verified"
    assert after == before
    evidence = await scenario.send(EvidenceRecorded(service=scenario.service, version="1.0.0",
                                                    digest=verified.data.digest, env="dev", check="smoke",
                                                    result="passed"))
    await scenario.processed_by("ledger", evidence)


async def test_a_replay_names_a_damaged_projection_and_the_rebuild_repairs_it(scenario):
    await promoted_to_dev(scenario)
    set_state = "update environments set state = $2 where service = $1 and env = 'dev'"

    async def dev_state() -> str:
        [row] = await scenario.query("ledger", "select state from environments where service = $1 and env = 'dev'",
                                     scenario.service)
        return row["state"]

    await tamper(scenario, set_state, scenario.service, "failed")
    try:
        audit = await promote_async("replay", "--json")  # compare only
        assert audit.returncode == 1, audit.stdout + audit.stderr
        report = json.loads(audit.stdout)
        assert report["identical"] is False and report["complete"] is True and report["replaced"] is False
        assert await dev_state() == "failed"  # left as it was
        repair = await promote_async("replay", "--rebuild")
        assert repair.returncode == 1 and "DIFFERENT" in repair.stdout
        assert await dev_state() == "verified"
        assert (await promote_async("replay")).returncode == 0
    finally:  # other tests share this ledger: undo the damage even if the replay could not
        await tamper(scenario, set_state, scenario.service, "verified")


async def test_a_hand_edited_entry_is_named_as_the_first_broken_link_of_the_chain(scenario):
    await promoted_to_dev(scenario)
    assert promote("audit", "--verify").returncode == 0
    [row] = await scenario.query("ledger", "select seq, canonical from entries where service = $1 "
                                           "and type = 'build.completed'", scenario.service)
    seq, original = row["seq"], bytes(row["canonical"])
    forged = original.replace(b'"author":"alice"', b'"author":"mallory"')
    assert forged != original
    conn = await ledger_connection(scenario)
    try:
        await rewrite_canonical(conn, seq, forged)
        tampered = await promote_async("audit", "--verify", "--json")
        assert tampered.returncode == 1
        assert json.loads(tampered.stdout)["chain"]["first_broken_seq"] == seq
        assert f"broken at entry #{seq}" in promote("audit", "--verify").stdout
    finally:  # other tests share this ledger
        await rewrite_canonical(conn, seq, original)
        await conn.close()
    assert promote("audit", "--verify").returncode == 0


async def rewrite_canonical(conn: asyncpg.Connection, seq: int, canonical: bytes) -> None:
    """Overwrite an entry's bytes the only way the database allows: in maintenance mode."""
    async with conn.transaction():
        await conn.execute("set local promote.ledger_maintenance = 'on'")
        await conn.execute("update entries set canonical = $2 where seq = $1", seq, canonical)


async def test_the_database_refuses_to_update_or_delete_an_entry_outside_maintenance(scenario):
    await promoted_to_dev(scenario)
    conn = await ledger_connection(scenario)
    try:
        for statement in ("update entries set env = 'prod' where service = $1",
                          "delete from entries where service = $1"):
            with pytest.raises(asyncpg.RaiseError, match="the ledger is append-only"):
                await conn.execute(statement, scenario.service)
        assert await conn.fetchval("select count(*) from entries where service = $1 and env = 'prod'",
                                   scenario.service) == 0
    finally:
        await conn.close()
