"""Alembic environment. Migrations are plain SQL scripts, run through psycopg.

psycopg sends a parameterless statement over the simple query protocol, so a
migration can be one SQL script with functions and triggers in it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
