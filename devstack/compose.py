"""compose.yaml's one-shot jobs and its service launcher, with the same credentials and trust table as ./dev-stack.

    python -m devstack.compose setup     every secret (once, in the `credentials` volume), and each container's
                                         own share of them in its own volume; the broker's config and start
                                         script, PostgreSQL's superuser password, the registry's htpasswd
    python -m devstack.compose init      the database, its roles and schemas; the broker's ACLs; the topics
    python -m devstack.compose run NAME  exec services.NAME with its own principal (Kafka user, id key,
                                         database role, registry login), as ./dev-stack hands them over

Inside a container Settings().var_dir is /var/lib/promote, so var/credentials/<kind>/<name> is
/var/lib/promote/credentials/...: the `credentials` volume there holds all of them (setup and init only); every
other container mounts its own volume in the same place, holding only what it may know. Passwords never appear
in compose.yaml, in an environment variable compose sets, or in a log.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from devstack import access, kafka, kafka_acls, postgres, registry
from devstack import processes as p
from devstack.services import API, SERVICES
from devstack.topics import ensure_topics_async
from shared.contracts import topics
from shared.platform.credentials import READER, SUPERUSER, credential_file, kafka_options
from shared.platform.settings import Settings

OUT = Path("/run/promote")
"""Where setup mounts the volumes it fills: OUT/<container>/ (credentials), OUT/kafka, OUT/postgres, OUT/registry."""
KAFKA_LIBS = "/opt/kafka/libs"
"""The broker's jars in apache/kafka (and where the test's local image mounts the Maven ones)."""
KAFKA_CONFIG = "/etc/promote/kafka"
"""Where the broker's container mounts the config setup wrote."""
READY_TIMEOUT = 180.0
INIT_LOCK = 0x70726F6D  # "prom": the advisory lock that serialises concurrent inits


def shares() -> dict[str, list[tuple[str, str]]]:
    """{container: [(kind, name), …]}: the credentials each container's own volume holds."""
    own = {name: [("kafka", name), ("ids", name), ("postgres", name)] for name in (*SERVICES, API)}
    own[API].append(("postgres", READER))  # the read side of status, history and audit
    for user in ("intake", "deployer"):
        own[user].append(("registry", user))
    own["cli"] = [("kafka", "ci"), ("registry", "ci")]  # CI publishes builds and pushes images
    return own


def ensure_secrets() -> None:
    """Every principal's secret in the `credentials` volume, created once (random, 0600)."""
    for name in access.kafka_principals():
        access.ensure_secret("kafka", name)
    for name in (*SERVICES, API):
        access.ensure_secret("ids", name, 32)
    for role in (SUPERUSER, READER, *postgres.SERVICE_ROLES):
        access.ensure_secret("postgres", role)
    for user in registry.USERS:
        access.ensure_secret("registry", user)


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    """Write through a temporary file renamed into place: a container reading it (or a second setup writing it:
    podman starts a service's exited dependencies again with it) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def write_shares(out: Path = OUT) -> None:
    """Each container's credentials into its own volume (out/<container>/<kind>/<name>), and nothing else there."""
    settings = Settings()
    for container, items in shares().items():
        root = out / container
        for kind, name in items:
            _write(root / kind / name, credential_file(settings, kind, name).read_text())
            (root / kind).chmod(0o700)
        root.chmod(0o700)
        wanted = {root / kind / name for kind, name in items} | {root / kind for kind, _ in items}
        for entry in sorted(root.rglob("*"), reverse=True):  # what an older table shared: withdrawn
            if entry not in wanted:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def kafka_start_script() -> str:
    """The broker's entrypoint: format the data directory once (every principal's SCRAM credential is
    created then: the broker has no JDK for KafkaAccess.java), then run it."""
    users = " ".join(f"--add-scram 'SCRAM-SHA-512=[name={name},password={access.ensure_secret('kafka', name)}]'"
                     for name in access.kafka_principals())
    java = f"java -Xms256m -Xmx512m -Dlog4j2.configurationFile={KAFKA_CONFIG}/log4j2.properties -cp '{KAFKA_LIBS}/*'"
    return ("#!/bin/sh\n# generated by devstack/compose.py (setup)\nset -eu\n"
            "if [ ! -f /var/lib/kafka/data/meta.properties ]; then\n"
            f"  {java} {kafka.STORAGE_TOOL} format -t \"$(cat {KAFKA_CONFIG}/cluster.id)\" "
            f"-c {KAFKA_CONFIG}/server.properties --standalone {users} >/dev/null\n"
            "fi\n"
            f"exec {java} kafka.Kafka {KAFKA_CONFIG}/server.properties\n")


def write_kafka(out: Path) -> None:
    """server.properties (listening on the compose network as `kafka`), log4j2.properties, cluster.id (kept), and
    the start script. Readable by the broker's unprivileged user; only setup and the broker mount this volume."""
    props = kafka.server_properties(access.ensure_secret("kafka", topics.ADMIN), "/var/lib/kafka/data",
                                    listen="0.0.0.0", advertised="kafka")
    _write(out / "server.properties", "# generated by devstack/compose.py (setup)\n"
           + "".join(f"{key}={value}\n" for key, value in props.items()), 0o644)
    _write(out / "log4j2.properties", kafka.log4j2_properties(), 0o644)
    if not (out / "cluster.id").exists():
        _write(out / "cluster.id", kafka._new_cluster_id() + "\n", 0o644)  # noqa: SLF001 - one definition
    _write(out / "start.sh", kafka_start_script(), 0o755)
    out.chmod(0o755)


def setup(out: Path = OUT) -> None:
    """Secrets, each container's share, and the broker's, PostgreSQL's and the registry's configuration."""
    t0 = time.monotonic()
    ensure_secrets()
    write_shares(out)
    write_kafka(out / "kafka")
    # PostgreSQL's entrypoint reads it as root and again as the postgres user: readable, in a volume only
    # setup and the database mount.
    _write(out / "postgres" / "password", access.ensure_secret("postgres", SUPERUSER), 0o644)
    _write(out / "registry" / "htpasswd", registry.htpasswd(), 0o644)
    p.say(f"setup: credentials and configuration written ({time.monotonic() - t0:.1f} s)")


def database_url(role: str, database: str | None = None) -> str:
    """PROMOTE_DATABASE_URL (postgresql://HOST:PORT/DB) as `role`, without a password (it is read from the
    container's credentials, shared.platform.credentials.database_dsn)."""
    url = urlsplit(Settings().database_url)
    host = f"{url.hostname}:{url.port}" if url.port else url.hostname
    return urlunsplit((url.scheme, f"{role}@{host}", f"/{database}" if database else url.path, "", ""))


async def _until(what: str, attempt, timeout: float = READY_TIMEOUT):
    """Call `attempt` until it succeeds: refused, timed out, not accepting logins yet (the server is starting)."""
    import asyncpg
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except (OSError, asyncio.TimeoutError, KafkaError, asyncpg.PostgresError) as error:
            if time.monotonic() > deadline:
                raise p.StackError(f"init: {what} did not answer within {timeout:.0f} s: {error!r}") from error
            await asyncio.sleep(0.5)


async def init_database() -> None:
    """The database (owned by the superuser), a login role per service owning its schema, and the reader."""
    import asyncpg

    password = access.ensure_secret("postgres", SUPERUSER)
    database = urlsplit(Settings().database_url).path.lstrip("/")
    conn = await _until("PostgreSQL", lambda: asyncpg.connect(database_url(SUPERUSER, "postgres"),
                                                              password=password, timeout=5))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            try:
                await conn.execute(f'CREATE DATABASE "{database}" OWNER {SUPERUSER}')
            except asyncpg.DuplicateDatabaseError:
                pass  # another init made it meanwhile
    finally:
        await conn.close()
    conn = await asyncpg.connect(database_url(SUPERUSER), password=password, timeout=5)
    try:
        # One init at a time (the lock lasts the statement's transaction): two would race on CREATE ROLE.
        await conn.execute(f"SELECT pg_advisory_xact_lock({INIT_LOCK});\n{postgres.roles_sql(database)}")
    finally:
        await conn.close()
    p.say(f"init: database {database}, {len(postgres.SERVICE_ROLES) + 1} roles and their schemas")


async def init_kafka() -> None:
    """Wait for the broker, bring its ACLs to the trust table, create the topics."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def started() -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(**kafka_options(Settings(), topics.ADMIN), request_timeout_ms=10000)
        try:
            await admin.start()
            await admin.list_topics()
        except BaseException:
            await admin.close()
            raise
        return admin

    admin = await _until("Kafka", started)
    try:
        wanted, added, removed = await kafka_acls.sync(admin)
    finally:
        await admin.close()
    p.say(f"init: kafka acls {wanted} ({added} added, {removed} removed)")
    result = await ensure_topics_async()
    p.say(f"init: topics {sum(state == 'created' for state in result.values())} created, {len(result)} total")


async def init() -> None:
    """The database and the broker, concurrently (each waits for its server)."""
    await asyncio.gather(init_database(), init_kafka())


def service_environment(name: str) -> dict[str, str]:
    """The environment plus this service's own principal; its passwords stay in its credentials files, except the
    id key and the registry login, which settings only take from the environment."""
    if name not in (*SERVICES, API):
        raise p.StackError(f"unknown service {name!r}; expected one of {(*SERVICES, API)}")
    settings = Settings()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PROMOTE_KAFKA_USERNAME", "PROMOTE_KAFKA_PASSWORD", "PROMOTE_EVENT_ID_KEY",
                                  "PROMOTE_REGISTRY_USERNAME", "PROMOTE_REGISTRY_PASSWORD"))}
    env.update({"PROMOTE_KAFKA_USERNAME": name, "PROMOTE_DATABASE_URL": database_url(name),
                "PROMOTE_EVENT_ID_KEY": credential_file(settings, "ids", name).read_text().strip()})
    if name in registry.USERS:
        env["PROMOTE_REGISTRY_USERNAME"] = name
        env["PROMOTE_REGISTRY_PASSWORD"] = credential_file(settings, "registry", name).read_text().strip()
    return env


def main(argv: list[str]) -> int:
    """setup | init | run NAME."""
    try:
        if argv == ["setup"]:
            setup()
        elif argv == ["init"]:
            asyncio.run(init())
        elif len(argv) == 2 and argv[0] == "run":
            env = service_environment(argv[1])
            os.execve(sys.executable, [sys.executable, "-m", f"services.{argv[1]}"], env)
        else:
            print("usage: python -m devstack.compose setup | init | run SERVICE", file=sys.stderr)
            return 2
    except p.StackError as error:
        print(str(error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
