"""Stored events through their protobuf envelopes and back, exactly."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from ledger.adapters.codec import decode_event, encode_event
from ledger.adapters.protobuf import PAYLOAD_FIELDS, decode, envelope, envelope_bytes
from ledger.domain import events as ev
from ledger.domain.events import EVENT_TYPES, Event
from loyalty_common.proto.loyalty.ledger.v1 import events_pb2

PROGRAM_ID = UUID("6f1c2a0e-3b7d-4c9e-8a51-2d4f6b8c0e13")
MEMBER_ID = "0b9e7c52-1f3a-4d86-9e2b-5c7a1d3f8e40"
LOT_A = "3c8f1e27-9a4b-4f0d-b6e2-7d1a5c9e3b08"
LOT_B = "a2d46f91-5e3c-47b8-8c0a-1f9e2b7d6c35"
TX_1 = "e7b3a9d2-4c1f-4e8a-9b6d-2a5f8c1e7d03"
TX_2 = "5d2c8e1a-7f4b-4a9c-b3e6-8d1f0a2c9e57"


def at(*parts: int, micro: int = 0) -> datetime:
    return datetime(*parts, microsecond=micro, tzinfo=UTC)  # type: ignore[misc]


CONFIG = {
    "name": "Kundeklubben Ærlig Øl",
    "default_locale": "nb",
    "time_zone": "Europe/Oslo",
    "earn_rates": {"NOK": "1", "DKK": "1.5", "EUR": "10"},
    "rounding": "down",
    "point_lifetime": {"kind": "rolling_months", "months": 24, "years": None},
    "pending_days": 0,
    "return_policy": "debt",
    "qualification_period": {"kind": "calendar_year"},
    "tiers": [
        {"name": "Bronze", "threshold": 0, "discount_percent": "5", "earn_multiplier": "1"},
        {
            "name": "Gold",
            "threshold": 9007199254740993,
            "discount_percent": "15",
            "earn_multiplier": "1.5",
        },
    ],
    "downgrade_policy": "one_down",
}

# Every event type, each with its optional fields all set and all left out.
SAMPLES: list[Event] = [
    ev.ProgramConfigured(config=CONFIG),
    ev.MemberEnrolled(
        member_id=MEMBER_ID,
        external_id="crm-88412",
        enrolled_at=at(2024, 1, 10, 12, micro=1),
        email="kari@example.no",
        phone="+4791234567",
        birthday=date(1990, 5, 17),
        locale="nb-NO",
        time_zone="Europe/Oslo",
        consents={"email_marketing": True, "sms_marketing": False},
        referred_by="7a1e9c3d-2b5f-4d8e-a6c0-9f3b1d7e5a24",
        first_name="Kari",
        last_name="Nordmann",
    ),
    ev.MemberEnrolled(
        member_id=MEMBER_ID, external_id="crm-88413", enrolled_at=at(2024, 1, 10, 12)
    ),
    ev.CardLinked(card_token="tok_4f8a2c91d3e7"),
    ev.CardUnlinked(card_token="tok_4f8a2c91d3e7"),
    ev.PointsEarned(
        transaction_id=TX_1,
        lot_id=LOT_A,
        kind="purchase",
        points=624,
        qualifying_points=499,
        qualifying_month="2024-03",
        earned_at=at(2024, 3, 31, 22, 59, 59, micro=999999),
        expires_at=at(2026, 3, 31, 22),
        available_at=at(2024, 4, 14, 22),
        debt_paid=12,
        order_id="ord-2024-000417",
        amount=Decimal("499.90"),
        currency="NOK",
        channel="store",
        store_id="oslo-07",
        partner_id="partner-fuel",
        lines=(
            ev.OrderLine(sku="SKU-1", quantity=2, amount=Decimal("300.00"), category="food"),
            ev.OrderLine(sku="SKU-2", quantity=1, amount=Decimal("199.90")),
        ),
        breakdown=(
            ev.BreakdownLine("base", 499, "499.90 NOK x 1 points per unit = 499.90, rounded down"),
            ev.BreakdownLine("multiplier", 125, "x 1.25"),
        ),
    ),
    ev.PointsEarned(
        transaction_id=TX_2,
        lot_id=LOT_B,
        kind="bonus",
        points=100,
        qualifying_points=0,
        qualifying_month="2024-04",
        earned_at=at(2024, 4, 2, 8),
        expires_at=at(2026, 4, 30, 22),
        available_at=None,
        breakdown=(ev.BreakdownLine("bonus", 100, "welcome"),),
    ),
    ev.PendingPointsActivated(
        lot_id=LOT_A, points=624, activated_at=at(2024, 4, 14, 22), debt_paid=12
    ),
    ev.PendingPointsActivated(lot_id=LOT_A, points=624, activated_at=at(2024, 4, 14, 22)),
    ev.PointsRedeemed(
        transaction_id=TX_2,
        points=700,
        allocations=(ev.Allocation(LOT_A, 600), ev.Allocation(LOT_B, 100)),
        redeemed_at=at(2024, 5, 1, 9, 30, micro=250000),
        reward="coffee-voucher",
        order_id="ord-2024-000522",
    ),
    ev.PointsRedeemed(
        transaction_id=TX_2,
        points=50,
        allocations=(ev.Allocation(LOT_A, 50),),
        redeemed_at=at(2024, 5, 1, 9, 30),
    ),
    ev.PointsAdjusted(
        transaction_id=TX_1,
        points=250,
        adjusted_at=at(2024, 6, 1, 10),
        lot_id=LOT_B,
        expires_at=at(2026, 6, 30, 22),
        debt_paid=40,
    ),
    ev.PointsAdjusted(
        transaction_id=TX_1,
        points=-75,
        adjusted_at=at(2024, 6, 1, 10),
        allocations=(ev.Allocation(LOT_A, 75),),
    ),
    ev.EarnReversed(
        transaction_id=TX_2,
        original_transaction_id=TX_1,
        points=624,
        qualifying_points=499,
        qualifying_month="2024-03",
        reversed_at=at(2024, 7, 1, 11),
        allocations=(ev.Allocation(LOT_A, 500),),
        debt_recorded=100,
        forgiven=24,
        amount=Decimal("499.90"),
    ),
    ev.EarnReversed(
        transaction_id=TX_2,
        original_transaction_id=TX_1,
        points=10,
        qualifying_points=8,
        qualifying_month="2024-03",
        reversed_at=at(2024, 7, 1, 11),
    ),
    ev.RedemptionReversed(
        transaction_id=TX_1,
        original_transaction_id=TX_2,
        points=700,
        allocations=(ev.Allocation(LOT_A, 600), ev.Allocation(LOT_B, 100)),
        reversed_at=at(2024, 7, 2, 11),
    ),
    ev.PointsExpired(lot_id=LOT_B, points=33, expired_at=at(2026, 4, 30, 22)),
    ev.QualificationPeriodEnded(
        period_start=at(2023, 12, 31, 23), period_end=at(2024, 12, 31, 23), qualifying_points=15499
    ),
    ev.CouponIssued(
        coupon_id="5b0c44f4-3c39-4b8f-9d0b-2f6f0e7e2a11",
        code="K7QX3M9TZA",
        kind="amount",
        value=Decimal("100.50"),
        points_cost=250,
        valid_from=at(2024, 3, 1, 0),
        valid_until=at(2024, 4, 1, 0),
        issued_at=at(2024, 3, 1, 9, micro=7),
        currency="NOK",
        campaign_id="9e2f7c1a-6d0b-4b1e-8f7a-3c5d2e1f0a99",
    ),
    ev.CouponIssued(
        coupon_id="6c1d55a5-4d4a-4c9a-8e1c-3a7a1f8f3b22",
        code="PERCENT10X",
        kind="percent",
        value=Decimal("10"),
        points_cost=0,
        valid_from=at(2024, 3, 1, 0),
        valid_until=at(2024, 4, 1, 0),
        issued_at=at(2024, 3, 1, 9),
    ),
    ev.CouponRedeemed(
        coupon_id="5b0c44f4-3c39-4b8f-9d0b-2f6f0e7e2a11",
        redeemed_at=at(2024, 3, 15, 14),
        order_id="web-1001",
        order_amount=Decimal("800.00"),
        currency="NOK",
        transaction_id="7d2e66b6-5e5b-4dab-9f2d-4b8b2a9a4c33",
    ),
    ev.CouponRedeemed(
        coupon_id="6c1d55a5-4d4a-4c9a-8e1c-3a7a1f8f3b22", redeemed_at=at(2024, 3, 16, 10)
    ),
    ev.MemberProfileChanged(
        changed_at=at(2024, 3, 16, 11, micro=5),
        email="kari.n@example.no",
        phone="+4798765432",
        first_name="Kari",
        last_name="Nordmann",
        locale="sv-SE",
        time_zone="Europe/Stockholm",
        birthday=date(1991, 2, 3),
    ),
    ev.MemberProfileChanged(changed_at=at(2024, 3, 16, 12), cleared=("phone", "birthday")),
    ev.ConsentsChanged(
        consents={"email": False, "sms": True},
        changed_at=at(2024, 3, 17, 8),
        source="unsubscribe link",
    ),
    ev.ConsentsChanged(consents={"push": False}, changed_at=at(2024, 3, 18, 8)),
]


def sample_id(event: Event) -> str:
    unset = sum(getattr(event, f.name) in (None, (), {}, 0) for f in dataclasses.fields(event))
    return f"{type(event).__name__}-{unset}-unset"


def record(event: Event, *, full: bool = True) -> dict[str, Any]:
    """A row of the events table as asyncpg returns it."""
    event_type, data = encode_event(event)
    program = event_type == "ProgramConfigured"
    return {
        "position": 9_000_000_001,
        "event_id": UUID("c4a7e2f9-8b1d-4e3a-9c6f-0d2b5a8e1f74"),
        "program_id": PROGRAM_ID,
        "stream_id": f"program-{PROGRAM_ID}" if program else MEMBER_ID,
        "version": 42,
        "type": event_type,
        "data": data,
        "occurred_at": ev.occurred_at(event) or at(2024, 1, 10, 12, 0, 0, micro=123456),
        "recorded_at": at(2024, 8, 1, 12, 0, 0, micro=654321),
        "actor": "key:checkout" if full else "clock",
        "reason": "goodwill after complaint" if full else None,
        "correlation_id": "req-7f3e" if full else "job-1",
        "causation_id": "cmd-91b2" if full else None,
    }


def instant(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def to_data(message: Message) -> dict[str, Any]:
    """A payload message back in the shape of encode_event's data, None for absent fields."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = dict(value)
        elif field.is_repeated and field.message_type is not None:
            out[field.name] = [to_data(item) for item in value]
        elif field.is_repeated:
            out[field.name] = list(value)
        elif field.message_type is Timestamp.DESCRIPTOR:
            out[field.name] = instant(value) if message.HasField(field.name) else None
        elif field.has_presence:
            out[field.name] = value if message.HasField(field.name) else None
        else:
            out[field.name] = value
    return out


@pytest.mark.parametrize("event", SAMPLES, ids=sample_id)
@pytest.mark.parametrize("full", [True, False], ids=["full-header", "bare-header"])
def test_every_field_survives_the_round_trip(event: Event, full: bool) -> None:
    rec = record(event, full=full)
    env = decode(envelope_bytes(rec, replay=full))

    assert env.event_id == "c4a7e2f9-8b1d-4e3a-9c6f-0d2b5a8e1f74"
    assert env.type == type(event).__name__
    assert env.program_id == str(PROGRAM_ID)
    assert env.stream_id == rec["stream_id"]
    assert env.stream_version == 42
    assert env.position == 9_000_000_001
    assert instant(env.occurred_at) == rec["occurred_at"]
    assert instant(env.recorded_at) == at(2024, 8, 1, 12, 0, 0, micro=654321)
    assert env.actor == rec["actor"]
    assert env.reason == (rec["reason"] or "")
    assert env.correlation_id == rec["correlation_id"]
    assert env.causation_id == (rec["causation_id"] or "")
    assert env.replay is full

    case = env.WhichOneof("payload")
    assert case == PAYLOAD_FIELDS[env.type]
    back = to_data(getattr(env, case))
    if env.type == "ProgramConfigured":
        back["config"] = json.loads(back["config"])
    # Same keys: the message has exactly the dataclass's fields.
    assert back.keys() == rec["data"].keys()
    # The domain event comes back equal, and re-encodes to the very same stored JSON:
    # decimal text unchanged ("499.90" stays "499.90"), datetimes to the microsecond,
    # lists in order, absent optionals absent and set ones set.
    restored = decode_event(env.type, back)
    assert restored == event
    assert encode_event(restored) == (env.type, rec["data"])


def test_every_event_type_has_a_payload_case_and_samples() -> None:
    assert set(PAYLOAD_FIELDS) == set(EVENT_TYPES)
    assert {type(e).__name__ for e in SAMPLES} == set(EVENT_TYPES)


def _dataclass_of(message: Any) -> type[Any]:
    return EVENT_TYPES.get(message.name) or getattr(ev, message.name)


@pytest.mark.parametrize(
    "message",
    [f.message_type for f in events_pb2.Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields]
    + [
        events_pb2.Allocation.DESCRIPTOR,
        events_pb2.BreakdownLine.DESCRIPTOR,
        events_pb2.OrderLine.DESCRIPTOR,
    ],
    ids=lambda m: m.name,
)
def test_messages_mirror_the_dataclasses(message: Any) -> None:
    """Same field names in the same order, and `optional` exactly where None is allowed."""
    fields = dataclasses.fields(_dataclass_of(message))
    assert [f.name for f in message.fields] == [f.name for f in fields]
    for proto, field in zip(message.fields, fields, strict=True):
        if proto.message_type is None and not proto.is_repeated:
            assert proto.has_presence == ("None" in str(field.type)), field.name


def test_points_earned_field_by_field() -> None:
    env = decode(envelope_bytes(record(SAMPLES[5])))
    earned = env.points_earned
    assert earned.amount == "499.90"
    assert [(line.sku, line.quantity, line.amount) for line in earned.lines] == [
        ("SKU-1", 2, "300.00"),
        ("SKU-2", 1, "199.90"),
    ]
    assert earned.lines[0].HasField("category") and earned.lines[0].category == "food"
    assert not earned.lines[1].HasField("category")
    assert instant(earned.earned_at) == at(2024, 3, 31, 22, 59, 59, micro=999999)
    assert earned.earned_at.nanos == 999_999_000
    assert earned.HasField("available_at") and earned.HasField("order_id")
    assert env.replay is False

    bonus = decode(envelope_bytes(record(SAMPLES[6]))).points_earned
    assert not bonus.HasField("available_at")
    for name in ("order_id", "amount", "currency", "channel", "store_id", "partner_id"):
        assert not bonus.HasField(name), name
    assert list(bonus.lines) == []


def test_program_config_is_exact_canonical_json() -> None:
    env = envelope(record(SAMPLES[0]))
    config = env.program_configured.config
    assert json.loads(config) == CONFIG  # the big threshold is not rounded through a double
    assert config == json.dumps(CONFIG, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # jsonb does not keep key order; the bytes do not depend on it.
    shuffled = record(SAMPLES[0])
    shuffled["data"] = {"config": dict(reversed(list(CONFIG.items())))}
    assert envelope_bytes(shuffled) == envelope_bytes(record(SAMPLES[0]))


def test_an_offset_datetime_becomes_the_same_instant() -> None:
    oslo = timezone(timedelta(hours=2))
    event = ev.PointsExpired(
        lot_id=LOT_A, points=5, expired_at=datetime(2024, 6, 1, 0, 0, 0, 7, tzinfo=oslo)
    )
    rec = record(event)
    rec["occurred_at"] = event.expired_at
    env = decode(envelope_bytes(rec))
    assert instant(env.points_expired.expired_at) == event.expired_at
    assert instant(env.occurred_at) == event.expired_at


def test_data_as_json_text_is_accepted() -> None:
    rec = record(SAMPLES[9])
    as_text = {**rec, "data": json.dumps(rec["data"])}
    assert envelope_bytes(as_text) == envelope_bytes(rec)


@pytest.mark.parametrize(
    "change",
    [
        {"type": "PointsTeleported"},
        {"occurred_at": datetime(2024, 1, 1, 12)},
        {"data": {"lot_id": LOT_A, "points": 5, "expired_at": "2024-06-01T00:00:00"}},
        {"data": {"lot_id": LOT_A, "points": 5, "expired_at": "2024-06-01T00:00:00Z", "x": 1}},
        {"data": {"lot_id": LOT_A, "points": 5.5, "expired_at": "2024-06-01T00:00:00Z"}},
    ],
    ids=["unknown type", "naive datetime", "naive data datetime", "unknown key", "float points"],
)
def test_what_cannot_be_encoded_exactly_is_refused(change: dict[str, Any]) -> None:
    rec = {**record(SAMPLES[-2]), **change}
    with pytest.raises(ValueError):
        envelope(rec)
