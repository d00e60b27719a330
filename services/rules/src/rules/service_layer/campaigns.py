"""Campaigns: bonus multipliers the ledger applies at earn time, and offers of coupons
to a segment of members.

A bonus campaign is announced on the campaign topic (BonusCampaignScheduled, later
BonusCampaignCancelled); the ledger keeps its own copy and applies it to earns whose
purchase time falls in the window. An offer campaign resolves its segment when it is
created and queues one coupon per member for the ledger (command id
`offer:<campaign>:<member>`); each coupon the ledger records is announced as OfferIssued.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from rules.adapters.publishing import Cause, Topics, publish_campaign_event
from rules.service_layer import commands


async def create_bonus(
    conn: asyncpg.Connection,
    topics: Topics,
    program_id: UUID,
    campaign_id: UUID,
    definition: dict[str, Any],
    cause: Cause,
) -> dict[str, Any]:
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO campaigns (campaign_id, program_id, kind, name, definition, created_at)
               VALUES ($1, $2, 'bonus', $3, $4, $5)""",
            campaign_id,
            program_id,
            definition["name"],
            definition,
            cause.occurred_at,
        )
        await publish_campaign_event(
            conn,
            topics,
            event_type="BonusCampaignScheduled",
            payload={
                "campaign_id": campaign_id,
                "name": definition["name"],
                "multiplier": definition["multiplier"],
                "starts_at": datetime.fromisoformat(definition["starts_at"]),
                "ends_at": datetime.fromisoformat(definition["ends_at"]),
                "channels": definition.get("channels", []),
                "categories": definition.get("categories", []),
                "store_ids": definition.get("store_ids", []),
                "tiers": definition.get("tiers", []),
            },
            program_id=str(program_id),
            key=str(campaign_id),
            member_id=None,
            cause=cause,
            event_id=cause.event_id("scheduled", campaign_id),
        )
    return await get(conn, program_id, campaign_id) or {}


async def cancel(
    conn: asyncpg.Connection, topics: Topics, program_id: UUID, campaign_id: UUID, cause: Cause
) -> dict[str, Any] | None:
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE campaigns SET cancelled_at = coalesce(cancelled_at, $3)
                WHERE campaign_id = $1 AND program_id = $2
            RETURNING kind, (cancelled_at = $3) AS now_cancelled""",
            campaign_id,
            program_id,
            cause.occurred_at,
        )
        if row is None:
            return None
        if row["kind"] == "bonus" and row["now_cancelled"]:
            await publish_campaign_event(
                conn,
                topics,
                event_type="BonusCampaignCancelled",
                payload={"campaign_id": campaign_id},
                program_id=str(program_id),
                key=str(campaign_id),
                member_id=None,
                cause=cause,
                event_id=cause.event_id("cancelled", campaign_id),
            )
    return await get(conn, program_id, campaign_id)


SEGMENT_SQL = {
    "tier": """SELECT member_id FROM members
                WHERE program_id = $1 AND tier = ANY($2::text[])""",
    "top_spenders": """SELECT member_id FROM purchases
                        WHERE program_id = $1 AND currency = $2
                          AND occurred_at >= $3 AND occurred_at < $4
                        GROUP BY member_id
                       HAVING sum(amount - reversed_amount) > 0
                        ORDER BY sum(amount - reversed_amount) DESC, member_id LIMIT $5""",
    "inactive": """SELECT member_id FROM members
                    WHERE program_id = $1 AND last_activity_at < $2""",
    "birthdays_this_month": """SELECT m.member_id FROM members m JOIN programs p USING (program_id)
                                WHERE m.program_id = $1 AND m.birthday IS NOT NULL
                                  AND extract(month FROM m.birthday) = extract(month FROM
                                      ($2::timestamptz AT TIME ZONE coalesce(
                                          m.time_zone, p.config ->> 'time_zone', 'UTC')))""",
    "punch_card": """SELECT member_id FROM punch_progress
                      WHERE card_id = $2 AND (punches > 0 OR completed > 0)
                        AND member_id IN (SELECT member_id FROM members WHERE program_id = $1)""",
}


async def segment_members(
    conn: asyncpg.Connection, program_id: UUID, segment: dict[str, Any], now: datetime
) -> list[UUID]:
    kind = segment["kind"]
    args: list[Any]
    if kind == "tier":
        args = [segment["tiers"]]
    elif kind == "top_spenders":
        args = [
            segment["currency"],
            datetime.fromisoformat(segment["since"]),
            datetime.fromisoformat(segment["until"]),
            segment["n"],
        ]
    elif kind == "inactive":
        args = [now - timedelta(days=segment["days"])]
    elif kind == "birthdays_this_month":
        args = [now]
    else:
        args = [UUID(segment["card_id"])]
    rows = await conn.fetch(SEGMENT_SQL[kind], program_id, *args)
    return [row["member_id"] for row in rows]


async def create_offer(
    conn: asyncpg.Connection,
    program_id: UUID,
    campaign_id: UUID,
    definition: dict[str, Any],
    cause: Cause,
) -> dict[str, Any]:
    coupon = definition["coupon"]
    async with conn.transaction():
        members = await segment_members(conn, program_id, definition["segment"], cause.occurred_at)
        await conn.execute(
            """INSERT INTO campaigns (campaign_id, program_id, kind, name, definition,
                                      created_at, targeted)
               VALUES ($1, $2, 'offer', $3, $4, $5, $6)""",
            campaign_id,
            program_id,
            definition["name"],
            definition,
            cause.occurred_at,
            len(members),
        )
        body = {
            "kind": coupon["kind"],
            "value": str(coupon["value"]),
            "points_cost": coupon.get("points_cost", 0),
            "valid_from": coupon["valid_from"],
            "valid_until": coupon["valid_until"],
            "campaign_id": str(campaign_id),
        }
        if coupon.get("currency"):
            body["currency"] = coupon["currency"]
        for member_id in members:
            await commands.enqueue(
                conn,
                command_id=f"offer:{campaign_id}:{member_id}",
                program_id=program_id,
                member_id=member_id,
                kind="issue_coupon",
                body=body,
                cause=cause,
                announce={
                    "event": "OfferIssued",
                    "campaign_id": str(campaign_id),
                    "campaign_name": definition["name"],
                },
            )
    return await get(conn, program_id, campaign_id) or {}


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "campaign_id": str(row["campaign_id"]),
        "kind": row["kind"],
        "name": row["name"],
        **{k: v for k, v in dict(row["definition"]).items() if k != "name"},
        "created_at": row["created_at"].isoformat(),
        "cancelled_at": row["cancelled_at"].isoformat() if row["cancelled_at"] else None,
        **({"targeted": row["targeted"]} if row["kind"] == "offer" else {}),
    }


async def get(
    conn: asyncpg.Connection, program_id: UUID, campaign_id: UUID
) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM campaigns WHERE campaign_id = $1 AND program_id = $2",
        campaign_id,
        program_id,
    )
    return _view(row) if row else None


async def list_campaigns(conn: asyncpg.Connection, program_id: UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM campaigns WHERE program_id = $1 ORDER BY created_at DESC, campaign_id",
        program_id,
    )
    return [_view(row) for row in rows]


async def stats(
    conn: asyncpg.Connection, program_id: UUID, campaign_id: UUID
) -> dict[str, Any] | None:
    campaign = await conn.fetchrow(
        "SELECT kind, targeted FROM campaigns WHERE campaign_id = $1 AND program_id = $2",
        campaign_id,
        program_id,
    )
    if campaign is None:
        return None
    row = await conn.fetchrow(
        """SELECT count(*) AS issued, count(redeemed_at) AS redeemed
             FROM campaign_coupons WHERE campaign_id = $1""",
        campaign_id,
    )
    revenue = await conn.fetch(
        """SELECT currency, sum(order_amount) AS amount FROM campaign_coupons
            WHERE campaign_id = $1 AND redeemed_at IS NOT NULL AND order_amount IS NOT NULL
            GROUP BY currency ORDER BY currency""",
        campaign_id,
    )
    pending = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                  count(*) FILTER (WHERE status = 'failed') AS failed
             FROM ledger_commands WHERE command_id LIKE $1""",
        f"offer:{campaign_id}:%",
    )
    issued, redeemed = row["issued"], row["redeemed"]
    return {
        "campaign_id": str(campaign_id),
        "targeted": campaign["targeted"],
        "issued": issued,
        "pending": pending["pending"],
        "failed": pending["failed"],
        "redeemed": redeemed,
        "redemption_rate": round(redeemed / issued, 4) if issued else 0.0,
        "revenue": {r["currency"] or "": str(r["amount"]) for r in revenue},
    }
