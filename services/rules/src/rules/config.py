"""Rules service settings, from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RulesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    # The rules service's own database; never the ledger's.
    database_url: str | None = Field(default=None, alias="RULES_DATABASE_URL")
    data_dir: Path = Field(default=Path(".data"), alias="LOYALTY_DATA_DIR")
    environment: Literal["dev", "production"] = Field(default="production", alias="LOYALTY_ENV")
    host: str = Field(default="127.0.0.1", alias="RULES_HOST")
    port: int = Field(default=8001, alias="RULES_PORT")
    pool_size: int = Field(default=10, ge=4, alias="RULES_DB_POOL_SIZE")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    # Seconds between clock runs (tier grace expiries, warnings, birthdays); 0 = only on
    # request (POST /v1/clock/run), as the tests do.
    clock_interval_seconds: float = Field(default=60.0, ge=0, alias="RULES_CLOCK_INTERVAL_SECONDS")

    kafka_bootstrap_servers: str | None = Field(default=None, alias="KAFKA_BOOTSTRAP_SERVERS")
    ledger_topic: str = Field(default="loyalty.ledger.events.v1", alias="LEDGER_TOPIC")
    tiers_topic: str = Field(default="loyalty.tiers.events.v1", alias="TIERS_TOPIC")
    campaigns_topic: str = Field(default="loyalty.campaigns.events.v1", alias="CAMPAIGNS_TOPIC")
    consumer_group: str = Field(default="rules", min_length=1, alias="RULES_CONSUMER_GROUP")
    kafka_partitions: int = Field(default=6, ge=1, alias="KAFKA_PARTITIONS")
    kafka_replication_factor: int = Field(default=1, ge=1, alias="KAFKA_REPLICATION_FACTOR")
    kafka_idempotence: bool = Field(default=False, alias="KAFKA_ENABLE_IDEMPOTENCE")
    kafka_session_timeout_ms: int = Field(
        default=10_000, ge=1000, alias="RULES_KAFKA_SESSION_TIMEOUT_MS"
    )

    # Where rewards are written, and the service key (`loyalty service-key create`)
    # that writes them for every program and checks callers' keys.
    ledger_url: str = Field(default="http://127.0.0.1:8000", alias="LEDGER_URL")
    ledger_key: str | None = Field(default=None, alias="RULES_LEDGER_KEY")

    @property
    def allow_future_as_of(self) -> bool:
        return self.environment == "dev"
