"""Settings read from the environment (PROMOTE_*), with local-stack defaults."""

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Where Kafka, PostgreSQL and the local state live."""

    model_config = SettingsConfigDict(env_prefix="PROMOTE_", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_username: str | None = None
    """This process's Kafka principal (SASL/SCRAM-SHA-512); each service has its own (devstack hands it over)."""
    kafka_password: SecretStr | None = None
    """Its password. Without one, a tool on the stack's host reads var/credentials/kafka/<principal>."""
    event_id_key: SecretStr | None = None
    """A service's key for the ids it derives (HMAC): stable across restarts and rebuilds, known to nobody else."""
    kafka_security_protocol: str = Field("SASL_PLAINTEXT", pattern=r"^(SASL_PLAINTEXT|SASL_SSL)$")
    """SASL_SSL where the broker has TLS (see docs/security.md); the broker has no unauthenticated listener."""
    database_url: str = "postgresql://reader@127.0.0.1:55432/promote"
    """A service's own role (with its password); tools on the stack's host name a role and read its password
    from var/credentials/postgres/<role> (shared.platform.credentials.database_dsn)."""
    var_dir: Path = REPO_ROOT / "var"
    health_port_base: int = 18080
    """The stack's first service's /health port (./dev-stack gives each service base + its index)."""
    health_port: int = Field(0, ge=0, le=65535)
    """This service's /health and /metrics port on loopback (0: none served)."""
    instance: str = Field("1", pattern=r"^[a-z0-9-]{1,16}$")
    """This instance's identity among its service's instances (static group membership)."""
    app_port_base: int = 20000
    """The first of the ports apps are given (services/deployer/repository.py APP_PORTS of them: 20000-31999, above
    every port of the stack's own and below the kernel's ephemeral range)."""
    topic_partitions: int = Field(3, ge=1, le=64)
    """Partitions of each event topic the stack creates (or raises an existing topic to; never fewer)."""
    consumer_batch: int = Field(100, ge=1, le=10_000)
    """Most records a service handles in one go (one transaction and one offset commit when it can): the
    record that woke it and what the consumer had already fetched behind it."""
    max_clock_skew_s: float = Field(300.0, ge=0)
    """An event whose `time` is further than this after the broker appended it (LogAppendTime) is dead-lettered."""
    artifact_roots: Annotated[list[Path], NoDecode] = Field(default_factory=lambda data: [data["var_dir"] / "drop"])
    """Directories intake accepts `file://` artifacts from (default: the drop directory var/drop). In the
    environment, PROMOTE_ARTIFACT_ROOTS is a colon-separated list of absolute paths, as PATH is."""
    artifact_max_bytes: int = Field(512 * 2**20, ge=1)
    """Largest artifact intake copies into the store (512 MiB)."""
    artifact_fetch_timeout_s: float = Field(60.0, gt=0)
    """A fetch that takes longer fails the build (artifact-unreachable) instead of holding intake."""
    app_user: str = "promote-app"
    """Unprivileged user the local driver runs apps as when the deployer runs as root (./dev-stack creates it)."""
    handler_stuck_after_s: float = Field(30.0, gt=0)
    """A handler (or a batch's preparation) running longer than this shows the service `degraded` on /health."""
    kafka_max_poll_interval_s: float = Field(120.0, ge=5, le=3600)
    """A consumer that does not ask Kafka for records this long (one batch's handlers taking longer) is taken out
    of its group and its partitions go to another member: no handler may take that long (a canary's steps run
    outside its handler)."""

    prometheus_url: str = Field("http://127.0.0.1:19090", pattern=r"^https?://[^/?#\s]+$")
    """The Prometheus that canary analyses with `metrics` query (the stack runs Debian's on loopback)."""
    prometheus_timeout_s: float = Field(5.0, gt=0, le=60)
    """A query that takes longer is an inconclusive measurement."""

    registry: str = "127.0.0.1:18500"
    """The OCI registry the stack runs (host:port, plain HTTP on loopback); image references naming it are
    fetched over HTTP, every other registry over HTTPS."""
    image_registries: list[str] = Field(default_factory=lambda data: [data["registry"]])
    """The registries images may come from (default: only the stack's own). A build naming another is rejected
    unread: intake never connects to a host a publisher chose, and waits out an outage only of these."""
    insecure_registries: list[str] = Field(default_factory=lambda data: [data["registry"]])
    """Registries spoken to over plain HTTP (default: only the stack's own, on loopback)."""
    registry_username: str | None = None
    """This process's registry login (intake and the deployer pull; CI pushes); devstack hands it over."""
    registry_password: SecretStr | None = None
    """Its password. Without one, a tool on the stack's host reads var/credentials/registry/<user>."""
    image_max_manifest_bytes: int = Field(4 * 2**20, ge=1024)
    """Largest manifest or index intake reads from a registry."""
    image_max_bytes: int = Field(8 * 2**30, ge=1)
    """Largest image (the sum of its config and layer sizes, as its manifest states) intake accepts."""

    container_engine: str = Field(default_factory=lambda data: f"unix://{data['var_dir'] / 'containers' / 'podman.sock'}")
    """The Docker Engine API the container driver speaks to: a Docker host's `unix:///var/run/docker.sock`, or
    (default) the podman service ./dev-stack runs on var/containers/podman.sock."""
    container_port: int = Field(8080, gt=0, lt=65536)
    """The port an app listens on inside its container (its PORT); published on a loopback port of the host."""
    container_user: str = Field("65534:65534", pattern=r"^[0-9]+(:[0-9]+)?$")
    """Who a container runs as when its image names no user or root (numeric uid:gid): never root."""
    container_stop_timeout_s: int = Field(5, ge=0, le=300)
    """Seconds a container has to stop after SIGTERM before it is killed."""

    ledger_signing_key: SecretStr | None = None
    """The ledger's private key (PEM, ECDSA P-256) for its signed checkpoints; ./dev-stack makes one and hands it
    to the ledger only, the public half in var/keys/ledger.pub. None: no checkpoints (no evidence bundles)."""
    ledger_checkpoint_interval_s: float = Field(5.0, gt=0)
    """How often the ledger signs a checkpoint of its head, when entries were appended since the last one."""
    trusted_keys_dir: Path = Field(default_factory=lambda data: data["var_dir"] / "keys" / "trusted")
    """The public keys gates trusts for signature and provenance gates: one PEM file `<key id>.pub` each (ECDSA
    P-256, e.g. cosign.pub, or RSA of 2048 bits or more), read again when a file there changes."""

    notifications_file: Path = Field(default_factory=lambda data: data["var_dir"] / "notify" / "notifications.yaml")
    """The notifier's subscriptions and the URL prefixes they may name (docs/operator-guide.md#notifications),
    read again when it changes."""
    webhook_secrets_dir: Path = Field(default_factory=lambda data: data["var_dir"] / "notify" / "secrets")
    """The receivers' HMAC keys, one file per secret name (not writable by others than its owner)."""
    webhook_timeout_s: float = Field(5.0, gt=0, le=60)
    """How long a receiver has to answer a webhook before the attempt counts as failed."""

    tag_check_interval_s: float = Field(10.0, ge=0)
    """How often intake asks the registry what the tags of registered images name now (0: never); a tag found
    moved to other bytes is reported once per new digest (artifact.tag_moved)."""
    tag_checks_per_round: int = Field(50, ge=1)
    """Tags asked about per round, least recently checked first."""

    drift_check_interval_s: float = Field(15.0, ge=0)
    """How often the deployer compares what runs in each environment with what it promoted there (0: only when
    asked, `promote drift`); a difference is reported within this time (drift.detected)."""

    api_url: str = "http://127.0.0.1:18070"
    """Where the operator API listens (the service binds the URL's host and port; the CLI calls it)."""
    api_bootstrap_token_file: Path | None = None
    """Where the API writes the local stack's first admin token if that file does not exist (./dev-stack sets it)."""
    oidc_issuer: str | None = None
    """An OIDC provider whose tokens the API accepts (its discovery document names the JWKS); None: API tokens only."""
    oidc_audience: str = "promote"
    """The `aud` an OIDC token must carry."""
    oidc_algorithms: list[str] = ["RS256", "ES256"]
    """The signature algorithms accepted (an allow-list: never `none`, never HMAC with a public key)."""
    oidc_username_claim: str = "preferred_username"
    """The claim that names the person (an identity: lowercase ASCII)."""
    oidc_groups_claim: str = "groups"
    """The claim that lists the person's groups (a leading `/` of a group path is dropped)."""
    api_group_roles: dict[str, list[str]] = {}
    """Role bindings per OIDC group, e.g. {"release-managers": ["approver:prod", "viewer:*"]} (JSON in the env)."""
    console_dir: Path = REPO_ROOT / "console"
    """The web console's files (its code in src/, its npm packages in node_modules/); the API serves them at /console."""
    console_oidc_client: str = "promote-console"
    """The OIDC client (public, code flow with PKCE) the console signs people in with, when oidc_issuer is set."""

    @field_validator("artifact_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        """Accept PROMOTE_ARTIFACT_ROOTS as `/a:/b` (a list given in code passes as it is)."""
        return [part for part in value.split(":") if part] if isinstance(value, str) else value

    @field_validator("artifact_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[Path]) -> list[Path]:
        """Roots are absolute: a relative one would depend on each process's working directory."""
        if not roots or any(not root.is_absolute() for root in roots):
            raise ValueError("artifact_roots must be one or more absolute paths")
        return roots

    @property
    def drop_dir(self) -> Path:
        """Where CI (and the demo, tests and benchmarks) put artifacts for intake: the first artifact root."""
        return self.artifact_roots[0]

    @property
    def store_dir(self) -> Path:
        """Content-addressed artifact store (sha256/<hex>)."""
        return self.var_dir / "store"

    @property
    def credentials_dir(self) -> Path:
        """The stack's own credentials (Kafka principals, database roles, id keys), one 0600 file each."""
        return self.var_dir / "credentials"

    @property
    def secrets_dir(self) -> Path:
        """Secret values for the local driver, one file per reference."""
        return self.var_dir / "secrets"
