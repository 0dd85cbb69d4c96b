"""compose.yaml's setup job and launcher (devstack/compose.py): each container gets only its own credentials, the
broker is configured for the compose network with every principal, the ACLs are the trust table's."""

import stat
from pathlib import Path

import bcrypt
import pytest

from devstack import access, compose, kafka_acls
from devstack.processes import StackError
from shared.contracts import topics


@pytest.fixture
def var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh var directory (the `credentials` volume is its credentials/) and compose.yaml's database URL."""
    monkeypatch.setenv("PROMOTE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PROMOTE_DATABASE_URL", "postgresql://postgres:5432/promote")
    return tmp_path / "var"


def files_under(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): path.read_text() for path in root.rglob("*") if path.is_file()}


def test_each_container_gets_only_its_own_credentials_and_loses_what_it_no_longer_may_know(var, tmp_path):
    out = tmp_path / "out"
    compose.setup(out)
    assert set(files_under(out / "intake")) == {"kafka/intake", "ids/intake", "postgres/intake", "registry/intake"}
    assert set(files_under(out / "gates")) == {"kafka/gates", "ids/gates", "postgres/gates"}
    assert set(files_under(out / "api")) == {"kafka/api", "ids/api", "postgres/api", "postgres/reader"}
    assert set(files_under(out / "cli")) == {"kafka/ci", "registry/ci"}
    assert files_under(out / "deployer")["kafka/deployer"] == (var / "credentials" / "kafka" / "deployer").read_text()
    assert stat.S_IMODE((out / "intake" / "kafka" / "intake").stat().st_mode) == 0o600
    (out / "gates" / "kafka" / "intake").write_text("left from an older table")
    compose.setup(out)  # again (podman runs it again with every dependent): same secrets, the stray one gone
    assert set(files_under(out / "gates")) == {"kafka/gates", "ids/gates", "postgres/gates"}
    assert files_under(out / "cli")["kafka/ci"] == (var / "credentials" / "kafka" / "ci").read_text()


def test_the_registry_knows_the_three_logins_and_postgres_gets_the_superusers_password(var, tmp_path):
    out = tmp_path / "out"
    compose.setup(out)
    logins = dict(line.split(":", 1) for line in (out / "registry" / "htpasswd").read_text().splitlines())
    assert set(logins) == {"ci", "intake", "deployer"}
    assert bcrypt.checkpw(access.ensure_secret("registry", "ci").encode(), logins["ci"].encode())
    assert (out / "postgres" / "password").read_text() == access.ensure_secret("postgres", "postgres")


def test_the_broker_listens_on_the_compose_network_and_is_formatted_once_with_every_principal(var, tmp_path):
    out = tmp_path / "out"
    compose.setup(out)
    props = dict(line.split("=", 1) for line in (out / "kafka" / "server.properties").read_text().splitlines()
                 if not line.startswith("#"))
    assert props["listeners"] == "SASL_PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://kafka:9092"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    script = (out / "kafka" / "start.sh").read_text()
    assert "if [ ! -f /var/lib/kafka/data/meta.properties ]" in script
    for name in access.kafka_principals():
        assert f"name={name},password={access.ensure_secret('kafka', name)}]" in script
    cluster = (out / "kafka" / "cluster.id").read_text()
    compose.setup(out)
    assert (out / "kafka" / "cluster.id").read_text() == cluster  # the formatted storage's id stays


def test_the_acls_init_sets_are_the_trust_tables():
    wanted = kafka_acls.wanted()
    assert len(wanted) == len(access.acl_lines())
    ci_writes = {name for kind, name, _, principal, _, op, _ in wanted
                 if principal == "User:ci" and op == kafka_acls.OPERATIONS["WRITE"]}
    assert ci_writes == {topics.BUILDS, topics.EVIDENCE}
    assert (kafka_acls.RESOURCE_TYPES["GROUP"], "gates", kafka_acls.LITERAL, "User:gates", "*",
            kafka_acls.OPERATIONS["READ"], kafka_acls.ALLOW) in wanted


def test_a_service_starts_with_its_own_principal_and_no_other(var, tmp_path, monkeypatch):
    compose.setup(tmp_path / "out")
    monkeypatch.setenv("PROMOTE_KAFKA_PASSWORD", "a parent's password")
    monkeypatch.setenv("PROMOTE_REGISTRY_PASSWORD", "a parent's login")
    env = compose.service_environment("gates")
    assert env["PROMOTE_KAFKA_USERNAME"] == "gates"
    assert env["PROMOTE_DATABASE_URL"] == "postgresql://gates@postgres:5432/promote"  # its password: in its files
    assert env["PROMOTE_EVENT_ID_KEY"] == access.ensure_secret("ids", "gates", 32)
    assert "PROMOTE_KAFKA_PASSWORD" not in env and "PROMOTE_REGISTRY_PASSWORD" not in env  # read from its own files
    intake = compose.service_environment("intake")
    assert (intake["PROMOTE_REGISTRY_USERNAME"], intake["PROMOTE_REGISTRY_PASSWORD"]) == (
        "intake", access.ensure_secret("registry", "intake"))
    with pytest.raises(StackError, match="unknown service 'ci'"):
        compose.service_environment("ci")
