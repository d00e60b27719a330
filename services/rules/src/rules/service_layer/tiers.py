"""Tier state per member: the engine's facts in `members.tier_state`, its announcements
on the tier topic and in `tier_history`."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from loyalty_common.telemetry import continued, current_traceparent
from opentelemetry.trace import SpanKind

from rules.adapters.publishing import Cause, Topics, derived_id, publish_tier_event
from rules.domain.tiers import (
    MemberTiers,
    TierChanged,
    TierEvent,
    TierRules,
)

_LOAD = """
SELECT m.member_id, m.program_id, m.enrolled_at, m.tier_state, m.tier_deferred, p.config
  FROM members m LEFT JOIN programs p USING (program_id)
 WHERE m.member_id = $1
   FOR UPDATE OF m
"""


def _rules(config: Any) -> TierRules | None:
    return TierRules.from_program(dict(config)) if config else None


def _state(row: asyncpg.Record) -> MemberTiers:
    stored = row["tier_state"]
    if stored:
        return MemberTiers.from_dict(dict(stored))
    return MemberTiers.new(row["enrolled_at"])


async def _save(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    state: MemberTiers,
    rules: TierRules | None,
    events: list[TierEvent],
    cause: Cause,
    topics: Topics,
    *,
    clock: bool = False,
) -> None:
    member_id, program_id = row["member_id"], row["program_id"]
    await conn.execute(
        "UPDATE members SET tier_state = $2, tier = $3, tier_check_at = $4 WHERE member_id = $1",
        member_id,
        state.to_dict(),
        state.announced_tier,
        state.next_check_at(rules) if rules else None,
    )
    for index, event in enumerate(events):
        event_type = type(event).__name__
        # A clock run's events are named by what they say, not by the run, so a later
        # run (or a rebuild) that finds the same thing publishes the same id.
        event_id = (
            derived_id("tier", member_id, event_type, event.occurred_at.isoformat(), index)
            if clock
            else cause.event_id("tier", member_id, index)
        )
        await publish_tier_event(
            conn,
            topics,
            event_type=event_type,
            payload=event,
            program_id=str(program_id),
            member_id=str(member_id),
            cause=cause,
            event_id=event_id,
            occurred_at=event.occurred_at,
        )
        if isinstance(event, TierChanged):
            await conn.execute(
                """INSERT INTO tier_history (event_id, member_id, program_id, occurred_at,
                                             from_tier, to_tier, reason, valid_until)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING""",
                event_id,
                member_id,
                program_id,
                event.occurred_at,
                event.from_tier,
                event.to_tier,
                event.reason,
                event.valid_until,
            )


def _call(state: MemberTiers, rules: TierRules, op: str, args: dict[str, Any]) -> list[TierEvent]:
    at = datetime.fromisoformat(args["at"])
    if op == "enrol":
        return state.enrol(rules, at)
    if op == "qualifying_changed":
        return state.qualifying_changed(rules, args["month"], args["delta"], at)
    return state.period_ended(
        rules, datetime.fromisoformat(args["start"]), datetime.fromisoformat(args["end"]), at
    )


async def _apply(
    conn: asyncpg.Connection,
    member_id: UUID,
    cause: Cause,
    topics: Topics,
    op: str,
    args: dict[str, Any],
) -> None:
    row = await conn.fetchrow(_LOAD, member_id)
    if row is None:
        return  # a member this service never saw enrol (the topic began later)
    rules = _rules(row["config"])
    if rules is None:
        # The program's configuration is on another partition and has not arrived: keep
        # the fact and its cause, so that the configuration's arrival applies it exactly
        # as it would have been applied (same events, same ids) had it come first.
        deferred = {
            "op": op,
            "args": args,
            "cause": {
                "id": cause.id,
                "correlation_id": cause.correlation_id,
                "occurred_at": cause.occurred_at.isoformat(),
                "replay": cause.replay,
                "traceparent": current_traceparent(),
            },
        }
        await conn.execute(
            "UPDATE members SET tier_deferred = tier_deferred || $2 WHERE member_id = $1",
            member_id,
            [deferred],
        )
        return
    state = _state(row)
    await _save(conn, row, state, rules, _call(state, rules, op, args), cause, topics)


async def enrol(
    conn: asyncpg.Connection, member_id: UUID, at: datetime, cause: Cause, topics: Topics
) -> None:
    await _apply(conn, member_id, cause, topics, "enrol", {"at": at.isoformat()})


async def qualifying_changed(
    conn: asyncpg.Connection,
    member_id: UUID,
    month: str,
    delta: int,
    cause: Cause,
    topics: Topics,
) -> None:
    args = {"month": month, "delta": delta, "at": cause.occurred_at.isoformat()}
    await _apply(conn, member_id, cause, topics, "qualifying_changed", args)


async def period_ended(
    conn: asyncpg.Connection,
    member_id: UUID,
    start: datetime,
    end: datetime,
    cause: Cause,
    topics: Topics,
) -> None:
    args = {"start": start.isoformat(), "end": end.isoformat(), "at": cause.occurred_at.isoformat()}
    await _apply(conn, member_id, cause, topics, "period_ended", args)


async def evaluate_program(
    conn: asyncpg.Connection, program_id: UUID, cause: Cause, topics: Topics
) -> None:
    """Apply the facts that waited for the program's configuration, each with its own
    cause; then place members the configuration newly gives a ladder to."""
    members = await conn.fetch(
        """SELECT member_id FROM members
            WHERE program_id = $1 AND (tier IS NULL OR tier_deferred <> '[]')
            ORDER BY member_id""",
        program_id,
    )
    for member in members:
        row = await conn.fetchrow(_LOAD, member["member_id"])
        rules = _rules(row["config"])
        if rules is None:
            return
        state = _state(row)
        for deferred in row["tier_deferred"]:
            was = deferred["cause"]
            earlier = Cause(
                id=was["id"],
                correlation_id=was["correlation_id"],
                occurred_at=datetime.fromisoformat(was["occurred_at"]),
                replay=was["replay"],
            )
            events = _call(state, rules, deferred["op"], deferred["args"])
            # In the trace of the fact's own cause, not of the configuration's arrival.
            with (
                continued("rules deferred fact", was.get("traceparent"), kind=SpanKind.INTERNAL),
                structlog.contextvars.bound_contextvars(correlation_id=earlier.correlation_id),
            ):
                await _save(conn, row, state, rules, events, earlier, topics)
        if not row["tier_deferred"]:
            await _save(
                conn, row, state, rules, state.evaluate(rules, cause.occurred_at), cause, topics
            )
        await conn.execute(
            "UPDATE members SET tier_deferred = '[]' WHERE member_id = $1", member["member_id"]
        )


async def tick(
    conn: asyncpg.Connection,
    as_of: datetime,
    cause: Cause,
    topics: Topics,
    program_id: UUID | None = None,
) -> int:
    """The clock's checks (grace expiries, downgrade warnings) due by `as_of`, of one
    program or of all."""
    members = await conn.fetch(
        """SELECT member_id FROM members
            WHERE tier_check_at <= $1 AND ($2::uuid IS NULL OR program_id = $2)
            ORDER BY tier_check_at""",
        as_of,
        program_id,
    )
    for member in members:
        row = await conn.fetchrow(_LOAD, member["member_id"])
        state, rules = _state(row), _rules(row["config"])
        if rules is None:
            continue
        events = state.tick(rules, as_of)
        await _save(conn, row, state, rules, events, cause, topics, clock=True)
    return len(members)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def view(
    conn: asyncpg.Connection, program_id: UUID, member_id: UUID, now: datetime
) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT m.member_id, m.enrolled_at, m.tier_state, p.config
             FROM members m LEFT JOIN programs p USING (program_id)
            WHERE m.member_id = $1 AND m.program_id = $2""",
        member_id,
        program_id,
    )
    if row is None:
        return None
    rules = _rules(row["config"])
    if rules is None:
        return None
    shown = _state(row).view(rules, now)
    return {
        "member_id": str(member_id),
        "tier": shown.tier,
        "valid_until": _iso(shown.valid_until),
        "qualifying_points": shown.qualifying_points,
        "period_start": _iso(shown.period_start),
        "period_end": _iso(shown.period_end),
        "next_tier": shown.next_tier,
        "points_to_next": shown.points_to_next,
        "projected_tier": shown.projected_tier,
    }


async def history(
    conn: asyncpg.Connection, program_id: UUID, member_id: UUID
) -> list[dict[str, Any]] | None:
    known = await conn.fetchval(
        "SELECT 1 FROM members WHERE member_id = $1 AND program_id = $2", member_id, program_id
    )
    if not known:
        return None
    rows = await conn.fetch(
        """SELECT event_id, occurred_at, from_tier, to_tier, reason, valid_until
             FROM tier_history WHERE member_id = $1 ORDER BY seq""",
        member_id,
    )
    return [
        {
            "event_id": str(r["event_id"]),
            "occurred_at": r["occurred_at"].isoformat(),
            "from_tier": r["from_tier"],
            "to_tier": r["to_tier"],
            "reason": r["reason"],
            "valid_until": _iso(r["valid_until"]),
        }
        for r in rows
    ]
