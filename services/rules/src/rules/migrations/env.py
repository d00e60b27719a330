"""Alembic environment: plain SQL migrations through psycopg (loyalty_common.migrations)."""

from loyalty_common.migrations import run_environment

run_environment()
