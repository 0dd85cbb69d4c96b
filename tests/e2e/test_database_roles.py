"""PostgreSQL trusts nobody: every login has a password, each service's role owns its schema and nothing else,
and the read side cannot write."""

import asyncpg
import pytest

from devstack import postgres
from shared.platform.credentials import READER, database_dsn

pytestmark = pytest.mark.e2e

SERVICES = ("intake", "gates", "deployer", "rollback", "ledger", "notifier")


async def test_no_role_logs_in_without_its_password(stack):
    for role in ("postgres", READER, *SERVICES, "promote"):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://{role}@127.0.0.1:{postgres.dsn_parts()[0]}/promote", timeout=5)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://{role}:guessed@127.0.0.1:{postgres.dsn_parts()[0]}/promote",
                                  timeout=5)


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_role_reaches_only_its_own_schema_and_is_no_superuser(stack, service):
    conn = await asyncpg.connect(database_dsn(stack, service), timeout=5)
    try:
        assert await conn.fetchval("select rolsuper or rolcreatedb or rolcreaterole from pg_roles "
                                   "where rolname = current_user") is False
        await conn.fetchval(f"select count(*) from {service}.processed_events")
        for other in SERVICES:
            if other == service:
                continue
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval(f"select count(*) from {other}.processed_events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("create schema intruder")
    finally:
        await conn.close()


async def test_the_reader_reads_every_schema_and_changes_none(stack):
    conn = await asyncpg.connect(database_dsn(stack, READER), timeout=5)
    try:
        for service in SERVICES:
            await conn.fetchval(f"select count(*) from {service}.processed_events")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"delete from {service}.processed_events")
    finally:
        await conn.close()


def test_the_socket_directory_is_not_world_writable_and_trust_is_gone(stack):
    assert postgres.socket_dir().stat().st_mode & 0o007 == 0
    rules = [line.split() for line in postgres.hba_rules((postgres.data_dir() / "pg_hba.conf").read_text())]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)  # no trust, no peer
