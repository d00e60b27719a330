"""Time-driven rules: tier grace expiries and downgrade warnings, birthdays, points
about to expire. Driven by an explicit `as_of`, like the ledger's clock, so tests and
operators can run a day that has not come yet (in dev). A run covers one program (an
operator's request, with that program's key) or all of them (the background loop)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from rules.adapters.publishing import Cause, Topics
from rules.service_layer import tiers, triggers

# One advisory lock: two replicas' clocks never run at once.
_CLOCK_LOCK = 0x72756C6573  # "rules"


async def run(
    pool: asyncpg.Pool,
    topics: Topics,
    as_of: datetime,
    correlation_id: str,
    program_id: UUID | None = None,
) -> dict[str, Any]:
    cause = Cause(id=f"clock:{as_of.isoformat()}", correlation_id=correlation_id, occurred_at=as_of)
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _CLOCK_LOCK):
            return {"as_of": as_of.isoformat(), "skipped": "another clock run is in progress"}
        members = await tiers.tick(conn, as_of, cause, topics, program_id)
        birthdays = await triggers.birthdays(conn, as_of, cause, program_id)
        expiring = await triggers.points_expiring(conn, as_of, cause, topics, program_id)
        # Where the next run's birthday window starts; never moved back by a run for an
        # earlier moment, so a birthday is not looked for twice in vain nor skipped.
        await conn.execute(
            """INSERT INTO clock_marks (program_id, as_of)
               SELECT program_id, $1 FROM programs WHERE $2::uuid IS NULL OR program_id = $2
               ON CONFLICT (program_id)
               DO UPDATE SET as_of = greatest(clock_marks.as_of, EXCLUDED.as_of)""",
            as_of,
            program_id,
        )
    return {
        "as_of": as_of.isoformat(),
        "tier_checks": members,
        "birthday_rewards": birthdays,
        "expiry_warnings": expiring,
    }
