"""Ledger settings, from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LedgerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    data_dir: Path = Field(default=Path(".data"), alias="LOYALTY_DATA_DIR")
    environment: Literal["dev", "production"] = Field(default="production", alias="LOYALTY_ENV")
    host: str = Field(default="127.0.0.1", alias="LEDGER_HOST")
    port: int = Field(default=8000, alias="LEDGER_PORT")
    workers: int = Field(default=1, ge=1, le=64, alias="LEDGER_WORKERS")
    # The scheduled clock holds one connection for its lock while it works on others.
    pool_size: int = Field(default=10, ge=2, alias="LEDGER_DB_POOL_SIZE")
    clock_interval_seconds: float = Field(default=60.0, ge=0, alias="LEDGER_CLOCK_INTERVAL_SECONDS")
    max_body_bytes: int = Field(default=64 * 1024, alias="LEDGER_MAX_BODY_BYTES")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    kafka_bootstrap_servers: str | None = Field(default=None, alias="KAFKA_BOOTSTRAP_SERVERS")
    ledger_topic: str = Field(default="loyalty.ledger.events.v1", alias="LEDGER_TOPIC")
    kafka_partitions: int = Field(default=6, ge=1, alias="KAFKA_PARTITIONS")
    kafka_replication_factor: int = Field(default=1, ge=1, alias="KAFKA_REPLICATION_FACTOR")
    # Idempotent producers need real Kafka; the embedded broker refuses them.
    kafka_idempotence: bool = Field(default=False, alias="KAFKA_ENABLE_IDEMPOTENCE")
    relay_host: str = Field(default="127.0.0.1", alias="RELAY_HOST")
    relay_port: int = Field(default=8010, alias="RELAY_PORT")
    relay_name: str = Field(default="ledger-events", min_length=1, alias="RELAY_NAME")
    relay_batch_size: int = Field(default=1000, ge=1, le=100_000, alias="RELAY_BATCH_SIZE")
    # `loyalty follow`: what the ledger keeps from the rules service's topics.
    follow_host: str = Field(default="127.0.0.1", alias="LEDGER_FOLLOW_HOST")
    follow_port: int = Field(default=8011, alias="LEDGER_FOLLOW_PORT")
    follow_group: str = Field(default="ledger-follow", min_length=1, alias="LEDGER_FOLLOW_GROUP")
    tiers_topic: str = Field(default="loyalty.tiers.events.v1", alias="TIERS_TOPIC")
    campaigns_topic: str = Field(default="loyalty.campaigns.events.v1", alias="CAMPAIGNS_TOPIC")
    kafka_session_timeout_ms: int = Field(
        default=10_000, ge=1000, alias="LEDGER_FOLLOW_SESSION_TIMEOUT_MS"
    )

    @property
    def allow_future_as_of(self) -> bool:
        return self.environment == "dev"
