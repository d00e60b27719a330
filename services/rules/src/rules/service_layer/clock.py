"""Time-driven rules: tier grace expiries and downgrade warnings, birthdays, points
about to expire. Driven by an explicit `as_of`, like the ledger's clock, so tests and
operators can run a day that has not come yet (in dev)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from rules.adapters.publishing import Cause, Topics
from rules.service_layer import tiers, triggers

# One advisory lock: two replicas' clocks never run at once.
_CLOCK_LOCK = 0x72756C6573  # "rules"


async def run(
    pool: asyncpg.Pool, topics: Topics, as_of: datetime, correlation_id: str
) -> dict[str, Any]:
    cause = Cause(id=f"clock:{as_of.isoformat()}", correlation_id=correlation_id, occurred_at=as_of)
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _CLOCK_LOCK):
            return {"as_of": as_of.isoformat(), "skipped": "another clock run is in progress"}
        members = await tiers.tick(conn, as_of, cause, topics)
        birthdays = await triggers.birthdays(conn, as_of, cause)
        expiring = await triggers.points_expiring(conn, as_of, cause, topics)
    return {
        "as_of": as_of.isoformat(),
        "tier_checks": members,
        "birthday_rewards": birthdays,
        "expiry_warnings": expiring,
    }
