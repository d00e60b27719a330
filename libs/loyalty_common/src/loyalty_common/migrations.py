"""Applying a service's alembic migrations (plain SQL scripts run through psycopg)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from loyalty_common.db import sqlalchemy_url

MIGRATION_LOCK = 0x6C6F79616C7401  # an advisory lock id, per database


def upgrade(migrations: Path, dsn: str) -> None:
    """Apply the migrations in ``migrations`` (an alembic script folder) up to head."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    command.upgrade(config, "head")


def run_environment() -> None:
    """What every service's alembic ``env.py`` runs.

    Migrations are plain SQL scripts run through psycopg: psycopg sends a parameterless
    statement over the simple query protocol, so a migration can be one SQL script with
    functions and triggers in it.
    """
    from alembic import context
    from sqlalchemy import create_engine, pool, text

    config = context.config
    url = config.get_main_option("sqlalchemy.url") or ""
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            # Replicas starting together on a fresh database migrate one after the
            # other: the others wait here, then find nothing left to do. (A session lock,
            # held until the connection closes, past the commit that ends this query.)
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK})
            connection.commit()
            context.configure(connection=connection, transaction_per_migration=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
