"""Notifier settings, from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str | None = Field(default=None, alias="NOTIFIER_DATABASE_URL")
    data_dir: Path = Field(default=Path(".data"), alias="LOYALTY_DATA_DIR")
    environment: Literal["dev", "production"] = Field(default="production", alias="LOYALTY_ENV")
    host: str = Field(default="127.0.0.1", alias="NOTIFIER_HOST")
    port: int = Field(default=8002, alias="NOTIFIER_PORT")
    # Where members' unsubscribe links point: this service as the public sees it.
    public_url: str = Field(default="http://127.0.0.1:8002", alias="NOTIFIER_PUBLIC_URL")
    pool_size: int = Field(default=10, ge=2, alias="NOTIFIER_DB_POOL_SIZE")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    kafka_bootstrap_servers: str | None = Field(default=None, alias="KAFKA_BOOTSTRAP_SERVERS")
    ledger_topic: str = Field(default="loyalty.ledger.events.v1", alias="LEDGER_TOPIC")
    tiers_topic: str = Field(default="loyalty.tiers.events.v1", alias="TIERS_TOPIC")
    campaigns_topic: str = Field(default="loyalty.campaigns.events.v1", alias="CAMPAIGNS_TOPIC")
    notifications_topic: str = Field(
        default="loyalty.notifications.events.v1", alias="NOTIFICATIONS_TOPIC"
    )
    consumer_group: str = Field(default="notifier", min_length=1, alias="NOTIFIER_CONSUMER_GROUP")
    kafka_partitions: int = Field(default=6, ge=1, alias="KAFKA_PARTITIONS")
    kafka_replication_factor: int = Field(default=1, ge=1, alias="KAFKA_REPLICATION_FACTOR")
    kafka_idempotence: bool = Field(default=False, alias="KAFKA_ENABLE_IDEMPOTENCE")
    kafka_session_timeout_ms: int = Field(
        default=10_000, ge=1000, alias="NOTIFIER_KAFKA_SESSION_TIMEOUT_MS"
    )
    smtp_host: str = Field(default="127.0.0.1", alias="SMTP_HOST")
    smtp_port: int = Field(default=1025, alias="SMTP_PORT")
    # auto: STARTTLS when the server offers it; starttls: required; tls: implicit TLS
    # (port 465); none: plain text.
    smtp_tls: Literal["auto", "starttls", "tls", "none"] = Field(default="auto", alias="SMTP_TLS")
    smtp_username: str | None = Field(default=None, alias="SMTP_USERNAME")
    smtp_password: SecretStr | None = Field(default=None, alias="SMTP_PASSWORD")
    mail_from: str = Field(default="club@loyalty.invalid", alias="NOTIFIER_MAIL_FROM")
    sms_webhook_url: str | None = Field(default=None, alias="SMS_WEBHOOK_URL")
    ledger_url: str = Field(default="http://127.0.0.1:8000", alias="LEDGER_URL")
    # A ledger service key with members:write, for unsubscribe links.
    ledger_key: str | None = Field(default=None, alias="NOTIFIER_LEDGER_KEY")
    max_attempts: int = Field(default=8, ge=1, alias="NOTIFIER_MAX_ATTEMPTS")
