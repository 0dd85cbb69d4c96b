"""Who may do what on the local stack: generated credentials, and the broker's SCRAM users and ACLs.

Every Kafka principal of shared/contracts/topics.py (and the broker's `admin`) gets a random password in
var/credentials/kafka/<name> (dir 0700, files 0600). The ACLs are derived from the same table:
a principal may write only the topics it owns, read the topics it consumes, and use its own
consumer group; everything else is denied (the broker's authorizer allows nothing by default).
`sync` runs devstack/KafkaAccess.java (one JVM) only when the spec changed since its last success.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import time
from pathlib import Path

from devstack import processes as p
from shared.contracts import topics
from shared.platform.credentials import credential_file
from shared.platform.settings import Settings


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def ensure_secret(kind: str, name: str, nbytes: int = 24) -> str:
    """The secret in var/credentials/<kind>/<name>, created (random, mode 0600) on first use."""
    path = credential_file(Settings(), kind, name)
    _private_dir(path.parent.parent)
    _private_dir(path.parent)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(nbytes))
    return path.read_text().strip()


def ensure_signing_key(name: str) -> str:
    """The PEM of an ECDSA P-256 private key in var/credentials/keys/<name> (0600), made on first use, with its
    public half in var/keys/<name>.pub (0644: for whoever checks what the key signs)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = credential_file(Settings(), "keys", name)
    _private_dir(path.parent.parent)
    _private_dir(path.parent)
    if not path.exists():
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    pem = path.read_text()
    public = Settings().var_dir / "keys" / f"{name}.pub"
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    wanted = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not public.exists() or public.read_bytes() != wanted:
        public.parent.mkdir(parents=True, exist_ok=True)
        public.write_bytes(wanted)
        public.chmod(0o644)
    return pem


def kafka_principals() -> list[str]:
    """`admin` and every principal of the trust table."""
    return [topics.ADMIN, *(principal.name for principal in topics.PRINCIPALS)]


def ensure_kafka_credentials() -> dict[str, str]:
    """{principal: password}, generating the ones that are missing."""
    return {name: ensure_secret("kafka", name) for name in kafka_principals()}


def acl_lines() -> list[str]:
    """The ACLs of the trust table as KafkaAccess.java reads them (tab-separated)."""
    lines = []
    for principal in topics.PRINCIPALS:
        for topic in principal.produces:
            lines += [f"allow\t{principal.name}\tTOPIC\t{topic}\t{op}" for op in ("WRITE", "DESCRIBE")]
        for topic in principal.reads:
            lines += [f"allow\t{principal.name}\tTOPIC\t{topic}\t{op}" for op in ("READ", "DESCRIBE")]
        for group in filter(None, (principal.group, *principal.groups)):
            lines.append(f"allow\t{principal.name}\tGROUP\t{group}\tREAD")
    return sorted(set(lines))


def spec_text() -> str:
    """Users (by password file) and ACLs, one per line."""
    users = [f"user\t{name}\t{credential_file(Settings(), 'kafka', name)}" for name in kafka_principals()
             if name != topics.ADMIN]  # admin's credential is written at format time
    return "\n".join(users + acl_lines()) + "\n"


def client_properties(bootstrap: str) -> Path:
    """A Java client config that logs in as admin (0600, in var/credentials)."""
    password = ensure_secret("kafka", topics.ADMIN)
    path = credential_file(Settings(), "kafka", "admin.properties")
    jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="{password}";'
    text = (f"bootstrap.servers={bootstrap}\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
            f"sasl.jaas.config={jaas}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def sync(libs: Path, stamp: Path, bootstrap: str) -> None:
    """Create the SCRAM users and bring the ACLs to the trust table, unless nothing changed since last time."""
    ensure_kafka_credentials()
    spec = spec_text()
    digest = hashlib.sha256(spec.encode() + b"".join(
        credential_file(Settings(), "kafka", name).read_bytes() for name in kafka_principals())).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    t0 = time.monotonic()
    spec_path = credential_file(Settings(), "kafka", "access.spec")
    fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(spec)
    program = Path(__file__).with_name("KafkaAccess.java")
    res = subprocess.run(["java", "-cp", f"{libs}/*", str(program), str(client_properties(bootstrap)),
                          str(spec_path)], capture_output=True, text=True)
    if res.returncode != 0:
        raise p.StackError(f"kafka: setting users and ACLs failed\n{(res.stdout + res.stderr)[-3000:]}")
    stamp.write_text(digest)
    p.say(f"kafka: {res.stdout.strip()} ({time.monotonic() - t0:.1f} s)")
