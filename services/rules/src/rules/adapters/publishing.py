"""The rules service's events: protobuf on the tier and campaign topics, via the outbox.

Event ids are derived from what caused the event (the ledger event, the clock run, the
command), so that a redelivered or replayed cause republishes the same ids and
consumers that dedupe by event id see nothing new.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import asyncpg
import structlog
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty_common import outbox
from loyalty_common.proto.loyalty.rules.v1 import campaigns_pb2, tiers_pb2

log = structlog.get_logger("rules")

TIERS_TOPIC = "loyalty.tiers.events.v1"
CAMPAIGNS_TOPIC = "loyalty.campaigns.events.v1"

_TIER_PAYLOADS = {
    "TierChanged": "tier_changed",
    "TierProgress": "tier_progress",
    "TierDowngradeWarning": "tier_downgrade_warning",
}
_CAMPAIGN_PAYLOADS = {
    "BonusCampaignScheduled": "bonus_campaign_scheduled",
    "BonusCampaignCancelled": "bonus_campaign_cancelled",
    "OfferIssued": "offer_issued",
    "RewardGranted": "reward_granted",
    "PointsExpiring": "points_expiring",
}


def derived_id(*parts: object) -> UUID:
    """An event id that the same parts always give."""
    return uuid5(NAMESPACE_URL, ":".join(["loyalty-rules", *map(str, parts)]))


@dataclass(frozen=True)
class Cause:
    """Why events are published: the ledger event (or request, or clock run) behind them."""

    id: str
    correlation_id: str
    occurred_at: datetime
    replay: bool = False

    def event_id(self, *parts: object) -> UUID:
        return derived_id(self.id, *parts)


@dataclass(frozen=True)
class Topics:
    tiers: str = TIERS_TOPIC
    campaigns: str = CAMPAIGNS_TOPIC


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _fill(message: ProtoMessage, values: dict[str, Any]) -> None:
    for field in message.DESCRIPTOR.fields:
        value = values.get(field.name)
        if value is None:
            continue
        if isinstance(value, datetime):
            getattr(message, field.name).CopyFrom(_timestamp(value))
        elif isinstance(value, list | tuple):
            getattr(message, field.name).extend(str(v) for v in value)
        elif field.type == field.TYPE_STRING:
            setattr(message, field.name, str(value))
        else:
            setattr(message, field.name, value)


def payload_values(payload: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        return {f.name: getattr(payload, f.name) for f in dataclasses.fields(payload)}
    return dict(payload)


async def publish_tier_event(
    conn: asyncpg.Connection,
    topics: Topics,
    *,
    event_type: str,
    payload: Any,
    program_id: str,
    member_id: str,
    cause: Cause,
    event_id: UUID,
    occurred_at: datetime,
) -> None:
    envelope = tiers_pb2.TierEvent(
        event_id=str(event_id),
        type=event_type,
        program_id=program_id,
        member_id=member_id,
        correlation_id=cause.correlation_id,
        causation_id=cause.id,
        replay=cause.replay,
    )
    envelope.occurred_at.CopyFrom(_timestamp(occurred_at))
    envelope.recorded_at.CopyFrom(_timestamp(datetime.now(UTC)))
    _fill(getattr(envelope, _TIER_PAYLOADS[event_type]), payload_values(payload))
    await outbox.append(
        conn,
        topic=topics.tiers,
        key=member_id,
        event_id=event_id,
        payload=envelope.SerializeToString(),
        headers={"event_type": event_type},
    )
    log.info(
        "tier_event_recorded",
        event_type=event_type,
        event_id=str(event_id),
        program_id=program_id,
        member_id=member_id,
        replay=cause.replay,
    )


async def publish_campaign_event(
    conn: asyncpg.Connection,
    topics: Topics,
    *,
    event_type: str,
    payload: dict[str, Any],
    program_id: str,
    key: str,
    member_id: str | None,
    cause: Cause,
    event_id: UUID,
) -> None:
    envelope = campaigns_pb2.CampaignEvent(
        event_id=str(event_id),
        type=event_type,
        program_id=program_id,
        member_id=member_id or "",
        correlation_id=cause.correlation_id,
        causation_id=cause.id,
        replay=cause.replay,
    )
    envelope.occurred_at.CopyFrom(_timestamp(cause.occurred_at))
    envelope.recorded_at.CopyFrom(_timestamp(datetime.now(UTC)))
    _fill(getattr(envelope, _CAMPAIGN_PAYLOADS[event_type]), payload)
    await outbox.append(
        conn,
        topic=topics.campaigns,
        key=key,
        event_id=event_id,
        payload=envelope.SerializeToString(),
        headers={"event_type": event_type},
    )
    log.info(
        "campaign_event_recorded",
        event_type=event_type,
        event_id=str(event_id),
        program_id=program_id,
        member_id=member_id,
        replay=cause.replay,
    )
