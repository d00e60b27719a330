"""What the rules service does with each ledger event (the consumer's handler).

Runs inside the transaction that records the event id in the inbox, so every effect
here (read models, tier state, commands for the ledger, outbox events) happens exactly
once per ledger event.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty_common.consumer import Message
from loyalty_common.proto.loyalty.ledger.v1.events_pb2 import Envelope

from rules.adapters.publishing import Cause, Topics
from rules.service_layer import punch_cards, tiers, triggers

Step = Callable[[asyncpg.Connection, Envelope, Cause, Topics], Awaitable[None]]


def timestamp(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def cause_of(envelope: Envelope) -> Cause:
    return Cause(
        id=envelope.event_id,
        correlation_id=envelope.correlation_id,
        occurred_at=timestamp(envelope.occurred_at),
        replay=envelope.replay,
    )


async def _program_configured(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    config = json.loads(envelope.program_configured.config)
    await conn.execute(
        """INSERT INTO programs (program_id, config, updated_at) VALUES ($1, $2, $3)
           ON CONFLICT (program_id) DO UPDATE SET config = $2, updated_at = $3""",
        UUID(envelope.program_id),
        config,
        cause.occurred_at,
    )
    # Members whose events arrived before their program's configuration (another
    # partition) have facts but no tier yet.
    await tiers.evaluate_program(conn, UUID(envelope.program_id), cause, topics)


async def _member_enrolled(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    enrolled = envelope.member_enrolled
    member_id = UUID(enrolled.member_id)
    enrolled_at = timestamp(enrolled.enrolled_at)
    inserted = await conn.fetchval(
        """INSERT INTO members (member_id, program_id, enrolled_at, birthday, time_zone,
                                referred_by, last_activity_at, tier_state)
           VALUES ($1, $2, $3, $4::text::date, $5, $6, $3, '{}')
           ON CONFLICT (member_id) DO NOTHING RETURNING true""",
        member_id,
        UUID(envelope.program_id),
        enrolled_at,
        enrolled.birthday if enrolled.HasField("birthday") else None,
        enrolled.time_zone if enrolled.HasField("time_zone") else None,
        UUID(enrolled.referred_by) if enrolled.HasField("referred_by") else None,
    )
    if not inserted:
        return
    await tiers.enrol(conn, member_id, enrolled_at, cause, topics)
    await triggers.welcome(conn, UUID(envelope.program_id), member_id, cause)


async def _member_profile_changed(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    """A new birthday (or time zone, in which the birthday begins) moves the birthday
    reward; the other profile fields are none of the rules service's business."""
    changed = envelope.member_profile_changed
    values: dict[str, str | None] = {
        name: getattr(changed, name) for name in ("birthday", "time_zone") if changed.HasField(name)
    }
    values |= {name: None for name in changed.cleared if name in ("birthday", "time_zone")}
    if not values:
        return
    await conn.execute(
        """UPDATE members SET birthday = CASE WHEN $2 THEN $3::text::date ELSE birthday END,
                  time_zone = CASE WHEN $4 THEN $5 ELSE time_zone END
            WHERE member_id = $1""",
        UUID(envelope.stream_id),
        "birthday" in values,
        values.get("birthday"),
        "time_zone" in values,
        values.get("time_zone"),
    )


async def _points_earned(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    earned = envelope.points_earned
    member_id = UUID(envelope.stream_id)
    program_id = UUID(envelope.program_id)
    earned_at = timestamp(earned.earned_at)
    await conn.execute(
        """INSERT INTO lots (lot_id, member_id, program_id, expires_at, remaining)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        UUID(earned.lot_id),
        member_id,
        program_id,
        timestamp(earned.expires_at),
        # What paid the member's debt never was in the lot (as at the ledger), so it
        # can neither be spent nor expire.
        earned.points - earned.debt_paid,
    )
    if earned.kind == "purchase":
        await conn.execute(
            """INSERT INTO purchases (transaction_id, program_id, member_id, occurred_at,
                                      amount, currency, points)
               VALUES ($1, $2, $3, $4, $5::numeric, $6, $7) ON CONFLICT DO NOTHING""",
            UUID(earned.transaction_id),
            program_id,
            member_id,
            earned_at,
            earned.amount,
            earned.currency,
            earned.points,
        )
        await conn.execute(
            "UPDATE members SET last_activity_at = greatest(last_activity_at, $2)"
            " WHERE member_id = $1",
            member_id,
            earned_at,
        )
        await triggers.referral(conn, program_id, member_id, cause)
        await punch_cards.punch(conn, program_id, member_id, earned, cause)
    if earned.qualifying_points:
        await tiers.qualifying_changed(
            conn, member_id, earned.qualifying_month, earned.qualifying_points, cause, topics
        )


async def _take_from_lots(conn: asyncpg.Connection, allocations: Any, sign: int) -> None:
    if allocations:
        await conn.execute(
            """UPDATE lots l SET remaining = l.remaining + $3 * a.points
                 FROM unnest($1::uuid[], $2::bigint[]) AS a(lot_id, points)
                WHERE l.lot_id = a.lot_id""",
            [UUID(a.lot_id) for a in allocations],
            [a.points for a in allocations],
            sign,
        )


async def _earn_reversed(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    reversed_ = envelope.earn_reversed
    member_id = UUID(envelope.stream_id)
    await _take_from_lots(conn, reversed_.allocations, -1)
    await conn.execute(
        """UPDATE purchases SET reversed_points = reversed_points + $2,
                  reversed_amount = reversed_amount + coalesce($3::numeric, 0)
            WHERE transaction_id = $1""",
        UUID(reversed_.original_transaction_id),
        reversed_.points,
        reversed_.amount if reversed_.HasField("amount") else None,
    )
    await punch_cards.withdraw(conn, member_id, UUID(reversed_.original_transaction_id), cause)
    if reversed_.qualifying_points:
        await tiers.qualifying_changed(
            conn,
            member_id,
            reversed_.qualifying_month,
            -reversed_.qualifying_points,
            cause,
            topics,
        )


async def _pending_points_activated(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    # Pending points that pay debt when they activate leave the lot then (the ledger's
    # account does the same), so the expiry warning counts only what is left.
    activated = envelope.pending_points_activated
    if activated.debt_paid:
        await conn.execute(
            "UPDATE lots SET remaining = remaining - $2 WHERE lot_id = $1",
            UUID(activated.lot_id),
            activated.debt_paid,
        )


async def _points_redeemed(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    await _take_from_lots(conn, envelope.points_redeemed.allocations, -1)


async def _redemption_reversed(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    await _take_from_lots(conn, envelope.redemption_reversed.allocations, 1)


async def _points_adjusted(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    adjusted = envelope.points_adjusted
    await _take_from_lots(conn, adjusted.allocations, -1)
    if adjusted.points > 0 and adjusted.HasField("lot_id"):
        await conn.execute(
            """INSERT INTO lots (lot_id, member_id, program_id, expires_at, remaining)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
            UUID(adjusted.lot_id),
            UUID(envelope.stream_id),
            UUID(envelope.program_id),
            timestamp(adjusted.expires_at),
            adjusted.points - adjusted.debt_paid,
        )


async def _points_expired(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    await conn.execute(
        "UPDATE lots SET remaining = 0 WHERE lot_id = $1", UUID(envelope.points_expired.lot_id)
    )


async def _period_ended(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    ended = envelope.qualification_period_ended
    await tiers.period_ended(
        conn,
        UUID(envelope.stream_id),
        timestamp(ended.period_start),
        timestamp(ended.period_end),
        cause,
        topics,
    )


async def _coupon_issued(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    issued = envelope.coupon_issued
    if not issued.HasField("campaign_id"):
        return
    await conn.execute(
        """INSERT INTO campaign_coupons (coupon_id, campaign_id, program_id, member_id, code,
                                         issued_at)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
        UUID(issued.coupon_id),
        UUID(issued.campaign_id),
        UUID(envelope.program_id),
        UUID(envelope.stream_id),
        issued.code,
        timestamp(issued.issued_at),
    )


async def _coupon_redeemed(
    conn: asyncpg.Connection, envelope: Envelope, cause: Cause, topics: Topics
) -> None:
    redeemed = envelope.coupon_redeemed
    await conn.execute(
        """UPDATE campaign_coupons SET redeemed_at = $2, order_amount = $3::numeric,
                  currency = $4
            WHERE coupon_id = $1""",
        UUID(redeemed.coupon_id),
        timestamp(redeemed.redeemed_at),
        redeemed.order_amount if redeemed.HasField("order_amount") else None,
        redeemed.currency if redeemed.HasField("currency") else None,
    )


STEPS: dict[str, Step] = {
    "program_configured": _program_configured,
    "member_enrolled": _member_enrolled,
    "member_profile_changed": _member_profile_changed,
    "points_earned": _points_earned,
    "pending_points_activated": _pending_points_activated,
    "earn_reversed": _earn_reversed,
    "points_redeemed": _points_redeemed,
    "redemption_reversed": _redemption_reversed,
    "points_adjusted": _points_adjusted,
    "points_expired": _points_expired,
    "qualification_period_ended": _period_ended,
    "coupon_issued": _coupon_issued,
    "coupon_redeemed": _coupon_redeemed,
}


def handler(topics: Topics) -> Callable[[asyncpg.Connection, Message], Awaitable[None]]:
    async def handle(conn: asyncpg.Connection, message: Message) -> None:
        if message.value is None:
            return
        envelope = Envelope.FromString(message.value)
        kind = envelope.WhichOneof("payload") or ""
        step = STEPS.get(kind)
        if step is None:
            return
        # A program's configuration and its members' events arrive on different
        # partitions and may be applied at once. The configuration takes its program's
        # lock alone, everything else shares it, so that either a member's event sees
        # the configuration or the configuration's catch-up sees the member.
        lock = (
            "pg_advisory_xact_lock"
            if kind == "program_configured"
            else "pg_advisory_xact_lock_shared"
        )
        await conn.execute(f"SELECT {lock}(hashtextextended($1, 0))", envelope.program_id)
        await step(conn, envelope, cause_of(envelope), topics)

    return handle
