"""API keys: issued once in clear text, stored as SHA-256 hashes, cached briefly."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from uuid import UUID

import asyncpg

SCOPES = ("points:write", "points:read", "members:write", "ops", "admin")
_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class ApiKey:
    """A program's key, or a service key (``program_id`` None) that acts for any program
    named in the request's X-Loyalty-Program header."""

    key_id: str
    program_id: UUID | None
    scopes: frozenset[str]


def hash_key(key: str) -> bytes:
    # Keys are 256-bit random secrets, so a fast hash is as strong as a slow one here.
    return hashlib.sha256(key.encode()).digest()


def new_key() -> tuple[str, str]:
    """A fresh (key_id, key). The key embeds its id so logs can name it safely."""
    key_id = secrets.token_hex(6)
    return key_id, f"lk_{key_id}_{secrets.token_urlsafe(32)}"


async def create_key(
    conn: asyncpg.Connection, program_id: UUID | None, name: str, scopes: tuple[str, ...]
) -> str:
    key_id, key = new_key()
    await conn.execute(
        "INSERT INTO api_keys (key_id, program_id, name, key_hash, scopes)"
        " VALUES ($1, $2, $3, $4, $5)",
        key_id,
        program_id,
        name,
        hash_key(key),
        list(scopes),
    )
    return key


class KeyRing:
    """Looks keys up by hash, remembering answers (including misses) for a short while."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[bytes, tuple[float, ApiKey | None]] = {}

    async def authenticate(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._pool.fetchrow(
            "SELECT key_id, program_id, scopes FROM api_keys"
            " WHERE key_hash = $1 AND revoked_at IS NULL",
            digest,
        )
        found = ApiKey(row["key_id"], row["program_id"], frozenset(row["scopes"])) if row else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_SECONDS, found)
        return found
