"""Database connections: one DSN form for asyncpg (services) and psycopg (migrations)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson


def _encode_json(value: Any) -> bytes:
    return orjson.dumps(value)


def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)  # jsonb's binary format: a version byte, then text


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def _init_connection(connection: asyncpg.Connection) -> None:
    # Binary codecs: COPY (projection rebuilds) needs them, and they skip a text round.
    await connection.set_type_codec(
        "json", encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog", format="binary"
    )
    await connection.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's reset query.

    The services set no session state (no SET, LISTEN or session advisory locks), so
    the default reset would cost a round trip on every release for nothing.
    """


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        # The services' statements are few and fixed; planning each execution anew (the
        # default while custom plans look cheaper) costs more than the statements do.
        server_settings={"plan_cache_mode": "force_generic_plan"},
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    connection = await asyncpg.connect(dsn)
    await _init_connection(connection)
    return connection


def sqlalchemy_url(dsn: str) -> str:
    """The psycopg form of a ``postgresql://`` DSN, for alembic."""
    scheme, rest = dsn.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://")
    return f"postgresql+psycopg://{rest}"
