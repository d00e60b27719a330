"""Callers' API keys, checked by the ledger that issued them (`GET /v1/keys/self`),
for the services beside the ledger (rules, notifier).

These services never read the ledger's database; they ask the ledger about a key
once and remembers the answer for a while: 30 s for a valid key, 5 s for an unknown
one, so a revoked key stops working here within half a minute, as at the ledger.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from uuid import UUID

import httpx

from loyalty_common.problems import ProblemError

_VALID_SECONDS = 30.0
_INVALID_SECONDS = 5.0


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    program_id: UUID
    scopes: frozenset[str]


class LedgerUnavailableError(Exception):
    """The ledger could not say whether a key is valid."""


class KeyChecker:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._cache: dict[bytes, tuple[float, ApiKey | None]] = {}

    async def authenticate(self, key: str, program_header: str | None) -> ApiKey | None:
        digest = hashlib.sha256(f"{key}\0{program_header or ''}".encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        headers = {"Authorization": f"Bearer {key}"}
        if program_header:
            headers["X-Loyalty-Program"] = program_header
        try:
            response = await self._client.get("/v1/keys/self", headers=headers)
        except httpx.HTTPError as exc:
            raise LedgerUnavailableError(str(exc)) from exc
        if response.status_code >= 500:
            raise LedgerUnavailableError(f"the ledger answered {response.status_code}")
        found: ApiKey | None = None
        if response.status_code == 200:
            body = response.json()
            if body.get("program_id"):
                found = ApiKey(body["key_id"], UUID(body["program_id"]), frozenset(body["scopes"]))
        if len(self._cache) > 10_000:
            self._cache.clear()
        ttl = _VALID_SECONDS if found else _INVALID_SECONDS
        self._cache[digest] = (now + ttl, found)
        return found


async def require(
    checker: KeyChecker, credentials: str | None, program_header: str | None, scope: str
) -> ApiKey:
    """The caller's key if it holds ``scope``; else the problem to answer with."""
    if credentials is None:
        raise ProblemError(401, "unauthorized", "an API key is required (Bearer)")
    try:
        key = await checker.authenticate(credentials, program_header)
    except LedgerUnavailableError as exc:
        raise ProblemError(
            503, "ledger_unavailable", f"cannot check the API key now: {exc}"
        ) from exc
    if key is None:
        raise ProblemError(401, "unauthorized", "unknown or revoked API key")
    if scope not in key.scopes:
        raise ProblemError(403, "forbidden", f"the API key lacks the {scope} scope")
    return key
