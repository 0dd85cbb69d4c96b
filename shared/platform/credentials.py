"""How a process authenticates to Kafka: its own principal from settings, or one read from the stack's files.

Service processes get PROMOTE_KAFKA_USERNAME/PASSWORD from whoever starts them; tools on the stack's
host (the CLI, tests, benchmarks) name the principal they act as and read its password from
var/credentials/kafka/<principal> (mode 0600, root's). A password is never logged or put on a topic.
"""

from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from shared.platform.settings import Settings


READER = "reader"
"""The database role that may only read the services' schemas (the CLI's and the API's read side)."""
SUPERUSER = "postgres"
"""The database's bootstrap superuser: only the stack (and disaster drills) use it."""


class MissingCredential(Exception):
    """No password is known for the principal; the message says where it was looked for."""


def credential_file(settings: Settings, kind: str, name: str) -> Path:
    """var/credentials/<kind>/<name>."""
    return settings.credentials_dir / kind / name


def read_credential(settings: Settings, kind: str, name: str) -> str:
    """The secret in var/credentials/<kind>/<name>, or MissingCredential."""
    path = credential_file(settings, kind, name)
    try:
        return path.read_text().strip()
    except OSError as error:
        raise MissingCredential(f"no {kind} credential for {name!r} at {path} ({error.strerror}; "
                                "is the stack up? ./dev-stack up)") from None


def kafka_login(settings: Settings, principal: str | None = None) -> tuple[str, str]:
    """(username, password) of `principal`, or of this process's own principal when None."""
    name = principal or settings.kafka_username
    if name is None:
        raise MissingCredential("no Kafka principal: set PROMOTE_KAFKA_USERNAME (and its password)")
    if name == settings.kafka_username and settings.kafka_password is not None:
        return name, settings.kafka_password.get_secret_value()
    return name, read_credential(settings, "kafka", name)


def registry_login(settings: Settings, user: str | None = None) -> tuple[str | None, str | None]:
    """(username, password) for the registry: `user`'s from var/credentials/registry, this process's own from
    settings, or (None, None) when neither is given (anonymous pulls)."""
    if user is None or user == settings.registry_username:
        if settings.registry_username and settings.registry_password is not None:
            return settings.registry_username, settings.registry_password.get_secret_value()
        if user is None:
            return None, None
    return user, read_credential(settings, "registry", user)


def kafka_options(settings: Settings, principal: str | None = None) -> dict[str, str]:
    """aiokafka client keyword arguments that authenticate as `principal` (see kafka_login)."""
    username, password = kafka_login(settings, principal)
    return {"bootstrap_servers": settings.kafka_bootstrap, "security_protocol": settings.kafka_security_protocol,
            "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": username, "sasl_plain_password": password}


def database_dsn(settings: Settings, role: str | None = None) -> str:
    """settings.database_url as `role` (default: the URL's own), with its password from var/credentials/postgres
    when the URL carries none."""
    url = urlsplit(settings.database_url)
    user = role or url.username
    if user is None:
        raise MissingCredential("the database URL names no role (PROMOTE_DATABASE_URL=postgresql://ROLE@HOST/DB)")
    password = unquote(url.password) if role in (None, url.username) and url.password else None
    if password is None:
        password = read_credential(settings, "postgres", user)
    host = f"{url.hostname}:{url.port}" if url.port else url.hostname or "127.0.0.1"
    return urlunsplit((url.scheme, f"{quote(user, safe='')}:{quote(password, safe='')}@{host}", url.path,
                       url.query, ""))


def redacted(dsn: str) -> str:
    """A DSN fit for an error message: no password."""
    url = urlsplit(dsn)
    host = f"{url.hostname}:{url.port}" if url.port else url.hostname or ""
    return urlunsplit((url.scheme, f"{url.username}@{host}" if url.username else host, url.path, "", ""))
