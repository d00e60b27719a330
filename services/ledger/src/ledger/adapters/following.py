"""What the ledger keeps from the rules service's topics, for earns to apply.

`loyalty follow` runs this handler in the consumer base (``loyalty_common.consumer``):
each event is applied once, in the transaction that records its id. Tier events for a
member arrive in order (they are keyed by member): ``member_tiers`` keeps the last
TierChanged, ``member_tier_history`` every tier with the time it took effect, which
earns look up by the purchase's time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty_common.consumer import Handler, Message
from loyalty_common.proto.loyalty.rules.v1 import campaigns_pb2, tiers_pb2


def _time(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


# A TierChanged holds from its occurred_at (when the rules service says the tier took
# effect) until the member's next one. A later announcement dated earlier than rows
# already kept (a late purchase or reversal re-evaluated the tier) is the rules
# service's newer word from its time on, so it replaces the rows after it.
_TIER_CHANGED = """
WITH superseded AS (
    DELETE FROM member_tier_history WHERE member_id = $1 AND effective_from > $5
), current_tier AS (
    INSERT INTO member_tiers (member_id, program_id, tier, valid_until, changed_at, event_id)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (member_id) DO UPDATE SET tier = $3, valid_until = $4,
           changed_at = $5, event_id = $6
)
INSERT INTO member_tier_history (member_id, effective_from, program_id, tier, valid_until,
                                 event_id)
VALUES ($1, $5, $2, $3, $4, $6)
ON CONFLICT (member_id, effective_from) DO UPDATE SET tier = $3, valid_until = $4,
       event_id = $6"""


async def _tier_event(conn: asyncpg.Connection, data: bytes) -> None:
    event = tiers_pb2.TierEvent.FromString(data)
    if event.WhichOneof("payload") != "tier_changed":
        return
    changed = event.tier_changed
    await conn.execute(
        _TIER_CHANGED,
        UUID(event.member_id),
        UUID(event.program_id),
        changed.to_tier,
        _time(changed.valid_until) if changed.HasField("valid_until") else None,
        _time(event.occurred_at),
        UUID(event.event_id),
    )


async def _campaign_event(conn: asyncpg.Connection, data: bytes) -> None:
    event = campaigns_pb2.CampaignEvent.FromString(data)
    kind = event.WhichOneof("payload")
    if kind == "bonus_campaign_scheduled":
        scheduled = event.bonus_campaign_scheduled
        await conn.execute(
            """INSERT INTO bonus_campaigns (campaign_id, program_id, name, multiplier,
                                            starts_at, ends_at, channels, categories,
                                            store_ids, tiers)
               VALUES ($1, $2, $3, $4::numeric, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (campaign_id) DO NOTHING""",
            UUID(scheduled.campaign_id),
            UUID(event.program_id),
            scheduled.name,
            scheduled.multiplier,
            _time(scheduled.starts_at),
            _time(scheduled.ends_at),
            list(scheduled.channels),
            list(scheduled.categories),
            list(scheduled.store_ids),
            list(scheduled.tiers),
        )
    elif kind == "bonus_campaign_cancelled":
        await conn.execute(
            "UPDATE bonus_campaigns SET cancelled_at = coalesce(cancelled_at, $2)"
            " WHERE campaign_id = $1",
            UUID(event.bonus_campaign_cancelled.campaign_id),
            _time(event.occurred_at),
        )


def handler(tiers_topic: str, campaigns_topic: str) -> Handler:
    async def handle(conn: asyncpg.Connection, message: Message) -> None:
        if message.value is None:
            return
        if message.topic == tiers_topic:
            await _tier_event(conn, message.value)
        elif message.topic == campaigns_topic:
            await _campaign_event(conn, message.value)

    return handle
