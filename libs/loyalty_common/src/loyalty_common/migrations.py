"""Applying a service's alembic migrations (plain SQL scripts run through psycopg)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from loyalty_common.db import sqlalchemy_url


def upgrade(migrations: Path, dsn: str) -> None:
    """Apply the migrations in ``migrations`` (an alembic script folder) up to head."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    command.upgrade(config, "head")
