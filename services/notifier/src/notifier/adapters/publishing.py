"""The notifier's own events on `loyalty.notifications.events.v1`, via the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import asyncpg
from loyalty_common import outbox
from loyalty_common.proto.loyalty.notifier.v1 import notifications_pb2

_PAYLOADS = {
    "MessageSent": "message_sent",
    "MessageSuppressed": "message_suppressed",
    "MessageFailed": "message_failed",
}


def message_id(event_id: str, channel: str) -> UUID:
    """The one message an event may cause on a channel."""
    return uuid5(NAMESPACE_URL, f"loyalty-notifier:{event_id}:{channel}")


async def publish(
    conn: asyncpg.Connection,
    topic: str,
    *,
    event_type: str,
    message: asyncpg.Record,
    payload: dict[str, Any],
    replay: bool = False,
) -> None:
    """One notification event about ``message`` (a ``messages`` row); its id is derived
    from the message and the outcome, so recording an outcome twice publishes once."""
    event_id = uuid5(NAMESPACE_URL, f"loyalty-notifier:{message['message_id']}:{event_type}")
    now = datetime.now(UTC)
    envelope = notifications_pb2.NotificationEvent(
        event_id=str(event_id),
        type=event_type,
        program_id=str(message["program_id"]),
        member_id=str(message["member_id"]),
        correlation_id=message["correlation_id"] or "",
        causation_id=str(message["event_id"]),
        replay=replay,
    )
    envelope.occurred_at.FromDatetime(now)
    envelope.recorded_at.FromDatetime(now)
    body = getattr(envelope, _PAYLOADS[event_type])
    body.message_id = str(message["message_id"])
    body.channel = message["channel"]
    body.event_type = message["event_type"]
    if message["campaign_id"] is not None:
        body.campaign_id = str(message["campaign_id"])
    for name, value in payload.items():
        setattr(body, name, value)
    await outbox.append(
        conn,
        topic=topic,
        key=str(message["member_id"]),
        event_id=event_id,
        payload=envelope.SerializeToString(),
        headers={"event_type": event_type},
    )
