"""What the notifier does with each event it consumes (the consumer's handler).

Ledger events keep its read model of programs and members (contacts, locale, time zone,
consents). Tier and campaign events become messages: one row per (event, channel),
decided and rendered here, in the transaction that records the event id in the inbox,
so a redelivered or replayed event never makes a second message. Sending is the
delivery worker's (``delivery.py``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import structlog
from google.protobuf.message import Message as ProtoMessage
from loyalty_common.consumer import Message
from loyalty_common.proto.loyalty.ledger.v1.events_pb2 import Envelope
from loyalty_common.proto.loyalty.rules.v1 import campaigns_pb2, tiers_pb2
from loyalty_common.telemetry import continued, current_traceparent
from opentelemetry.trace import SpanKind

from notifier.adapters.publishing import message_id, publish
from notifier.domain.templates import (
    EVENT_KINDS,
    SAMPLE_VARIABLES,
    Rendered,
    TemplateError,
    render,
    resolve_locale,
)

log = structlog.get_logger("notifier.deciding")

CHANNELS = ("email", "sms", "webhook")
DEFAULT_SETTINGS: dict[str, Any] = {
    # Transactional messages (tier changed, downgrade warning, points expiring) go on
    # these channels to every member with an address there, unless the member has
    # withdrawn that channel's consent; marketing needs the channel's consent.
    "transactional_channels": ["email"],
    # Marketing messages per member and channel in any 7 days; more are suppressed.
    "marketing_per_week": 3,
    # Local times in the member's zone between which messages wait, e.g.
    # {"start": "21:00", "end": "08:00"}; null: none.
    "quiet_hours": None,
    # The program's own endpoint for these events, e.g.
    # {"url": "https://crm.example/hooks/loyalty", "events": ["TierChanged"]}; null: none.
    "webhook": None,
}


@dataclass(frozen=True)
class Topics:
    ledger: str
    tiers: str
    campaigns: str
    notifications: str


@dataclass(frozen=True)
class Context:
    topics: Topics
    public_url: str  # where unsubscribe links point


def _values(payload: ProtoMessage) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in payload.DESCRIPTOR.fields:
        if field.message_type is not None:  # Timestamps
            values[field.name] = (
                getattr(payload, field.name).ToDatetime(tzinfo=UTC)
                if payload.HasField(field.name)
                else None
            )
        elif field.has_presence and not payload.HasField(field.name):
            values[field.name] = None
        else:
            values[field.name] = getattr(payload, field.name)
    return values


def quiet_until(at: datetime, zone: str, quiet: dict[str, str] | None) -> datetime | None:
    """The end of the quiet hours ``at`` falls in, in the member's zone; None if none."""
    if not quiet:
        return None
    local = at.astimezone(ZoneInfo(zone))
    start, end = time.fromisoformat(quiet["start"]), time.fromisoformat(quiet["end"])
    now = local.time()
    inside = start <= now < end if start <= end else (now >= start or now < end)
    if not inside:
        return None
    day = local.date() if now < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _recipient(channel: str, member: asyncpg.Record, event_type: str, settings: Any) -> Any:
    if channel == "email":
        return member["email"]
    if channel == "sms":
        return member["phone"]
    webhook = settings["webhook"]
    return webhook["url"] if webhook and event_type in webhook["events"] else None


def _decision(
    channel: str, kind: str, consent: bool | None, settings: dict[str, Any], replay: bool
) -> str | None:
    """Why a message is not sent (None: it is), before the frequency cap."""
    if replay:
        return "replay"
    if channel == "webhook":
        # The program's own system: it gets every event it subscribed to, with the
        # member's consents in the payload, and no caps or quiet hours.
        return None
    if kind == "marketing" and consent is not True:
        return "no_consent"
    if kind == "transactional" and consent is False:
        return "no_consent"
    if kind == "transactional" and channel not in settings["transactional_channels"]:
        return "channel_off"
    return None


def _rendered(
    event_type: str,
    channel: str,
    locale: str,
    values: dict[str, Any],
    overrides: dict[str, str] | None,
) -> Rendered:
    variables = {k: values.get(k) for k in SAMPLE_VARIABLES[event_type]}
    if overrides:
        try:
            return render(event_type, channel, locale, variables, overrides)
        except TemplateError as error:
            # Checked against samples when saved; an event can still hold what no sample
            # did. The member gets the default copy rather than nothing.
            log.warning(
                "template_override_failed", event_type=event_type, channel=channel, error=str(error)
            )
    return render(event_type, channel, locale, variables)


def _webhook_body(
    event_type: str,
    kind: str,
    *,
    event_id: str,
    program_id: str,
    member: asyncpg.Record,
    locale: str,
    values: dict[str, Any],
) -> str:
    """The webhook's JSON body, in the Standard Webhooks shape (type, timestamp, data)."""
    # The program's own system knows the member's name; the event's data is what it lacks.
    data = {k: v for k, v in values.items() if k not in ("program_name", "time_zone", "first_name")}
    return orjson.dumps(
        {
            "type": event_type,
            "timestamp": datetime.now(UTC),
            "data": {
                "event_id": event_id,
                "program_id": program_id,
                "member_id": str(member["member_id"]),
                "kind": kind,
                "locale": locale,
                "time_zone": values["time_zone"],
                "consents": dict(member["consents"]),
                **data,
            },
        }
    ).decode()


async def _message(
    conn: asyncpg.Connection,
    context: Context,
    *,
    event_type: str,
    payload: ProtoMessage,
    event_id: str,
    program_id: str,
    member_id: str,
    correlation_id: str,
    replay: bool,
    campaign_id: str | None = None,
) -> None:
    member = await conn.fetchrow(
        """SELECT m.*, p.name AS program_name, p.default_locale, p.time_zone AS program_zone,
                  p.settings,
                  (SELECT jsonb_object_agg(o.locale || '/' || o.channel, o.parts)
                     FROM template_overrides o
                    WHERE o.program_id = m.program_id AND o.event_type = $2) AS overrides
             FROM members m JOIN programs p USING (program_id) WHERE m.member_id = $1""",
        UUID(member_id),
        event_type,
    )
    assert member is not None  # the handler parks events of members it does not know
    settings = {**DEFAULT_SETTINGS, **dict(member["settings"])}
    kind = EVENT_KINDS[event_type]
    zone = member["time_zone"] or member["program_zone"]
    locale = resolve_locale(member["locale"], member["default_locale"])
    overrides = dict(member["overrides"] or {})  # by "locale/channel"
    now = datetime.now(UTC)
    variables = {
        **_values(payload),
        "program_name": member["program_name"],
        "time_zone": zone,
        "first_name": member["first_name"],
    }
    for channel in CHANNELS:
        recipient = _recipient(channel, member, event_type, settings)
        if not recipient:
            continue  # no address on that channel: nothing to decide
        consent = dict(member["consents"]).get(channel)
        reason = _decision(channel, kind, consent, settings, replay)
        if (
            reason is None
            and kind == "marketing"
            and channel != "webhook"
            and await _over_cap(conn, member_id, channel, now, settings)
        ):
            reason = "frequency_cap"
        mid = message_id(event_id, channel)
        token = None
        subject = text = html = segments = None
        if reason is None and channel == "webhook":
            text = _webhook_body(
                event_type,
                kind,
                event_id=event_id,
                program_id=program_id,
                member=member,
                locale=locale,
                values=variables,
            )
        elif reason is None:
            values = dict(variables)
            if kind == "marketing":
                token = secrets.token_urlsafe(16)
                values["unsubscribe_url"] = f"{context.public_url}/u/{token}"
            rendered = _rendered(
                event_type, channel, locale, values, overrides.get(f"{locale}/{channel}")
            )
            subject, text, html = rendered.subject, rendered.text, rendered.html
            segments = rendered.sms_segments
        deferred = None
        if reason is None and channel != "webhook":
            deferred = quiet_until(now, zone, settings["quiet_hours"])
        row = await conn.fetchrow(
            """INSERT INTO messages (message_id, event_id, channel, program_id, member_id,
                                     event_type, kind, campaign_id, status, reason, recipient,
                                     locale, subject, body_text, body_html, segments,
                                     unsubscribe_token, correlation_id, next_attempt_at,
                                     trace_context)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                       $17, $18, coalesce($19, now()), $20)
               ON CONFLICT DO NOTHING RETURNING *""",
            mid,
            UUID(event_id),
            channel,
            UUID(program_id),
            UUID(member_id),
            event_type,
            kind,
            UUID(campaign_id) if campaign_id else None,
            "suppressed" if reason else "pending",
            reason or ("quiet_hours" if deferred else None),
            recipient,
            locale,
            subject,
            text,
            html,
            segments,
            token,
            correlation_id,
            deferred,
            current_traceparent(),
        )
        if row is None:
            continue  # decided before
        log.info(
            "message_decided",
            message_id=str(mid),
            event_type=event_type,
            channel=channel,
            member_id=member_id,
            status=row["status"],
            reason=row["reason"],
        )
        if reason is not None:
            await publish(
                conn,
                context.topics.notifications,
                event_type="MessageSuppressed",
                message=row,
                payload={"reason": reason},
                replay=replay,
            )


async def _over_cap(
    conn: asyncpg.Connection,
    member_id: str,
    channel: str,
    now: datetime,
    settings: dict[str, Any],
) -> bool:
    cap = settings.get("marketing_per_week")
    if cap is None:
        return False
    sent = await conn.fetchval(
        """SELECT count(*) FROM messages
            WHERE member_id = $1 AND channel = $2 AND kind = 'marketing'
              AND status IN ('pending', 'sent') AND created_at > $3""",
        UUID(member_id),
        channel,
        now - timedelta(days=7),
    )
    return bool(sent >= cap)


# What the notifier keeps of a member's profile, in its members table's column names.
_CONTACT_FIELDS = ("email", "phone", "locale", "time_zone", "first_name", "last_name")


async def _profile_changed(conn: asyncpg.Connection, envelope: Envelope) -> None:
    """The member's new contact data: the next message goes to the new address."""
    changed = envelope.member_profile_changed
    values = {f: getattr(changed, f) for f in _CONTACT_FIELDS if changed.HasField(f)}
    values |= {f: None for f in changed.cleared if f in _CONTACT_FIELDS}
    if not values:
        return  # a birthday alone: nothing the notifier keeps
    # Column names from _CONTACT_FIELDS alone, never from the message.
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, start=2))
    await conn.execute(
        f"UPDATE members SET {sets} WHERE member_id = $1",
        UUID(envelope.stream_id),
        *values.values(),
    )


async def _ledger_event(conn: asyncpg.Connection, data: bytes) -> bool:
    """Apply a ledger event; True if it made members or programs known."""
    envelope = Envelope.FromString(data)
    kind = envelope.WhichOneof("payload")
    if kind == "program_configured":
        config = json.loads(envelope.program_configured.config)
        await conn.execute(
            """INSERT INTO programs (program_id, name, default_locale, time_zone)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (program_id) DO UPDATE SET name = $2, default_locale = $3,
                      time_zone = $4""",
            UUID(envelope.program_id),
            str(config.get("name") or ""),
            str(config.get("default_locale") or "en"),
            str(config.get("time_zone") or "UTC"),
        )
    elif kind == "member_enrolled":
        enrolled = envelope.member_enrolled
        await conn.execute(
            """INSERT INTO members (member_id, program_id, consents, email, phone, locale,
                                    time_zone, first_name, last_name)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT (member_id) DO NOTHING""",
            UUID(enrolled.member_id),
            UUID(envelope.program_id),
            dict(enrolled.consents),
            *(getattr(enrolled, f) if enrolled.HasField(f) else None for f in _CONTACT_FIELDS),
        )
    elif kind == "member_profile_changed":
        await _profile_changed(conn, envelope)
    elif kind == "consents_changed":
        await conn.execute(
            "UPDATE members SET consents = consents || $2 WHERE member_id = $1",
            UUID(envelope.stream_id),
            dict(envelope.consents_changed.consents),
        )
    return kind in ("program_configured", "member_enrolled")


_CAMPAIGN_MESSAGES = {"offer_issued", "reward_granted", "points_expiring"}


def handler(context: Context) -> Callable[[asyncpg.Connection, Message], Awaitable[None]]:
    topics = context.topics

    async def decide(conn: asyncpg.Connection, topic: str, value: bytes) -> None:
        event: tiers_pb2.TierEvent | campaigns_pb2.CampaignEvent
        if topic == topics.tiers:
            event = tiers_pb2.TierEvent.FromString(value)
        else:
            event = campaigns_pb2.CampaignEvent.FromString(value)
            if event.WhichOneof("payload") not in _CAMPAIGN_MESSAGES:
                return
        case = event.WhichOneof("payload")
        if case is None:
            return
        payload = getattr(event, case)
        if event.type == "TierChanged" and payload.reason == "enrolled":
            return  # joining at the entry tier is the welcome's business, not a tier change
        known = await conn.fetchval(
            "SELECT 1 FROM members JOIN programs USING (program_id) WHERE member_id = $1",
            UUID(event.member_id),
        )
        if not known:
            # The enrolment (or the program's configuration) is on the ledger topic and
            # has not been applied yet: the event waits for it (blocking the consumer on
            # it would hold up that topic too).
            await conn.execute(
                """INSERT INTO waiting_events (member_id, topic, value, trace_context)
                   VALUES ($1, $2, $3, $4)""",
                UUID(event.member_id),
                topic,
                value,
                current_traceparent(),
            )
            return
        await _message(
            conn,
            context,
            event_type=event.type,
            payload=payload,
            event_id=event.event_id,
            program_id=event.program_id,
            member_id=event.member_id,
            correlation_id=event.correlation_id,
            replay=event.replay,
            campaign_id=payload.campaign_id if event.type == "OfferIssued" else None,
        )

    async def handle(conn: asyncpg.Connection, message: Message) -> None:
        if message.value is None:
            return
        if message.topic != topics.ledger:
            await decide(conn, message.topic, message.value)
            return
        if await _ledger_event(conn, message.value):
            waiting = await conn.fetch(
                """DELETE FROM waiting_events w
                    WHERE EXISTS (SELECT 1 FROM members m JOIN programs p USING (program_id)
                                   WHERE m.member_id = w.member_id)
                RETURNING seq, topic, value, trace_context"""
            )
            for row in sorted(waiting, key=lambda r: r["seq"]):
                # In the trace of the event that waited, not of the enrolment.
                with continued(
                    "notifier waiting event", row["trace_context"], kind=SpanKind.INTERNAL
                ):
                    await decide(conn, row["topic"], row["value"])

    return handle
