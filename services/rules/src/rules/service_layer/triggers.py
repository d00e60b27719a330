"""Reward triggers: welcome, referral, birthday, and points-expiring warnings.

A program's triggers are its `programs.triggers` document (PUT /v1/triggers). Rewards
go to the ledger through `commands`, with ids that make each reward happen once:
welcome and referral once per member, birthday once per member and year.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from rules.adapters.publishing import Cause, Topics, derived_id, publish_campaign_event
from rules.service_layer import commands


async def program_triggers(conn: asyncpg.Connection, program_id: UUID) -> dict[str, Any]:
    found = await conn.fetchval("SELECT triggers FROM programs WHERE program_id = $1", program_id)
    return dict(found or {})


def coupon_body(spec: dict[str, Any], issued_at: datetime, **extra: Any) -> dict[str, Any]:
    """A ledger coupon from a coupon spec: valid from issue for `valid_days` days."""
    body = {
        "kind": spec["kind"],
        "value": str(spec["value"]),
        "points_cost": spec.get("points_cost", 0),
        "valid_from": issued_at.isoformat(),
        "valid_until": (issued_at + timedelta(days=spec["valid_days"])).isoformat(),
        **extra,
    }
    if spec.get("currency"):
        body["currency"] = spec["currency"]
    return body


async def reward(
    conn: asyncpg.Connection,
    *,
    command_id: str,
    program_id: UUID,
    member_id: UUID,
    spec: dict[str, Any],
    trigger: str,
    detail: str,
    cause: Cause,
    valid_from: datetime | None = None,
) -> bool:
    """Queue a reward of a trigger: `{"points": N}` or `{"coupon": {...}}`. A coupon is
    valid from `valid_from` (default: the cause's time) for its `valid_days`."""
    if "coupon" in spec:
        return await commands.enqueue(
            conn,
            command_id=command_id,
            program_id=program_id,
            member_id=member_id,
            kind="issue_coupon",
            body=coupon_body(spec["coupon"], valid_from or cause.occurred_at),
            cause=cause,
            announce={"event": "RewardGranted", "trigger": trigger, "detail": detail},
        )
    return await commands.enqueue(
        conn,
        command_id=command_id,
        program_id=program_id,
        member_id=member_id,
        kind="earn_bonus",
        body={"points": spec["points"], "reason": f"{trigger}: {detail}"},
        cause=cause,
        announce={"event": "RewardGranted", "trigger": trigger, "detail": detail},
    )


async def welcome(
    conn: asyncpg.Connection, program_id: UUID, member_id: UUID, cause: Cause
) -> None:
    spec = (await program_triggers(conn, program_id)).get("welcome")
    if spec:
        await reward(
            conn,
            command_id=f"welcome:{member_id}",
            program_id=program_id,
            member_id=member_id,
            spec=spec,
            trigger="welcome",
            detail="welcome to the club",
            cause=cause,
        )


async def referral(
    conn: asyncpg.Connection, program_id: UUID, member_id: UUID, cause: Cause
) -> None:
    """The referrer's reward, on the referred member's first purchase earn."""
    referrer = await conn.fetchval(
        """UPDATE members SET referral_rewarded = true
            WHERE member_id = $1 AND referred_by IS NOT NULL AND NOT referral_rewarded
        RETURNING referred_by""",
        member_id,
    )
    if referrer is None:
        return
    spec = (await program_triggers(conn, program_id)).get("referral")
    if spec:
        await reward(
            conn,
            command_id=f"referral:{member_id}",
            program_id=program_id,
            member_id=referrer,
            spec=spec,
            trigger="referral",
            detail=f"referred member {member_id} made a first purchase",
            cause=cause,
        )


# Members whose birthday the clock has passed: this year's birthday (in the member's
# time zone, else the program's) lies between the day of the program's previous clock
# run and today, so a birthday that no run fell on (an outage, a deploy) is rewarded on
# the next run, late but in its year. A clock run for an earlier moment than one before
# it (an operator's) looks at its own day alone. Birthdays before the member enrolled
# are not rewarded. The months in the window (with two days' slack for time zones) let
# the members_birthday index narrow the search.
_BIRTHDAYS_DUE = """
WITH local AS (
    SELECT m.member_id, m.program_id, p.triggers -> 'birthday' AS spec, z.zone, m.birthday,
           ($1::timestamptz AT TIME ZONE z.zone)::date AS today,
           (least(c.as_of, $1::timestamptz) AT TIME ZONE z.zone)::date AS since,
           (m.enrolled_at AT TIME ZONE z.zone)::date AS enrolled
      FROM programs p
      LEFT JOIN clock_marks c USING (program_id)
      CROSS JOIN LATERAL (
          SELECT array_agg(DISTINCT extract(month FROM d)::int) AS months
            FROM generate_series(
                date_trunc('month', least(c.as_of, $1::timestamptz) - interval '2 days'),
                $1::timestamptz + interval '2 days', interval '1 month') AS d) w
      JOIN members m ON m.program_id = p.program_id
                    AND extract(month FROM m.birthday) = ANY(w.months)
      CROSS JOIN LATERAL (
          SELECT coalesce(m.time_zone, p.config ->> 'time_zone', 'UTC') AS zone) z
     WHERE p.triggers ? 'birthday' AND m.birthday IS NOT NULL
       AND ($2::uuid IS NULL OR p.program_id = $2)),
dated AS (
    SELECT *, CASE
               WHEN (extract(month FROM birthday), extract(day FROM birthday)) = (2, 29)
                AND extract(day FROM make_date(extract(year FROM today)::int, 3, 1) - 1) <> 29
               THEN make_date(extract(year FROM today)::int, 2, 28)
               ELSE make_date(extract(year FROM today)::int, extract(month FROM birthday)::int,
                              extract(day FROM birthday)::int)
              END AS day
      FROM local)
SELECT member_id, program_id, spec, extract(year FROM day)::int AS year,
       -- The reward dates from the start of the birthday, not from the clock run that
       -- found it, so a later run (or a replay) asks the same.
       day::timestamp AT TIME ZONE zone AS day_start
  FROM dated
 WHERE day BETWEEN since AND today AND day >= enrolled
"""


_DAY = timedelta(days=1)


async def birthdays(
    conn: asyncpg.Connection, as_of: datetime, cause: Cause, program_id: UUID | None = None
) -> int:
    """Queue the birthday rewards of members whose birthday the clock has passed at
    `as_of` (`_BIRTHDAYS_DUE`), of one program or of all. 29 February birthdays count
    on 28 February in other years. Once per member and year, whatever runs find it."""
    rows = await conn.fetch(_BIRTHDAYS_DUE, as_of, program_id)
    queued = 0
    for row in rows:
        queued += await reward(
            conn,
            command_id=f"birthday:{row['member_id']}:{row['year']}",
            program_id=row["program_id"],
            member_id=row["member_id"],
            spec=dict(row["spec"]),
            trigger="birthday",
            detail=f"happy birthday {row['year']}",
            cause=replace(cause, occurred_at=row["day_start"]),
            # A reward given late (the clock passed the birthday while down) keeps its
            # whole validity from when it is given, so a long outage cannot hand out
            # a coupon that has already expired.
            valid_from=row["day_start"] if as_of < row["day_start"] + _DAY else as_of,
        )
    return queued


async def points_expiring(
    conn: asyncpg.Connection,
    as_of: datetime,
    cause: Cause,
    topics: Topics,
    program_id: UUID | None = None,
) -> int:
    """PointsExpiring per member and expiry time, `days_before` days ahead, once per lot,
    of one program or of all."""
    rows = await conn.fetch(
        """WITH due AS (
               UPDATE lots l SET warned = true
                 FROM programs p
                WHERE p.program_id = l.program_id AND p.triggers ? 'points_expiring'
                  AND ($2::uuid IS NULL OR l.program_id = $2)
                  AND l.remaining > 0 AND NOT l.warned AND l.expires_at > $1
                  AND l.expires_at <= $1 + make_interval(
                      days => (p.triggers -> 'points_expiring' ->> 'days_before')::int)
            RETURNING l.program_id, l.member_id, l.expires_at, l.remaining)
           SELECT program_id, member_id, expires_at, sum(remaining)::bigint AS points
             FROM due GROUP BY program_id, member_id, expires_at""",
        as_of,
        program_id,
    )
    for row in rows:
        await publish_campaign_event(
            conn,
            topics,
            event_type="PointsExpiring",
            payload={"points": row["points"], "expires_at": row["expires_at"]},
            program_id=str(row["program_id"]),
            key=str(row["member_id"]),
            member_id=str(row["member_id"]),
            cause=cause,
            event_id=derived_id("expiring", row["member_id"], row["expires_at"].isoformat()),
        )
    return len(rows)
