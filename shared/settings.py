"""Settings read from the environment (PROMOTE_*), with local-stack defaults."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Where Kafka, PostgreSQL and the local state live."""

    model_config = SettingsConfigDict(env_prefix="PROMOTE_", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql://promote@127.0.0.1:55432/promote"
    var_dir: Path = REPO_ROOT / "var"
    health_port_base: int = 18080
    app_port_base: int = 18100
    topic_partitions: int = Field(3, ge=1, le=64)
    """Partitions of each event topic the stack creates (or raises an existing topic to; never fewer)."""
    consumer_batch: int = Field(100, ge=1, le=10_000)
    """Most records a service handles in one go (one transaction and one offset commit when it can): the
    record that woke it and what the consumer had already fetched behind it."""

    @property
    def store_dir(self) -> Path:
        """Content-addressed artifact store (sha256/<hex>)."""
        return self.var_dir / "store"

    @property
    def secrets_dir(self) -> Path:
        """Secret values for the local driver, one file per reference."""
        return self.var_dir / "secrets"
