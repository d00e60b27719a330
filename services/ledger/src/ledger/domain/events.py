"""Ledger events: facts, named in the past tense, never edited once recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Allocation:
    """Points taken from (or given back to) one lot."""

    lot_id: str
    points: int


@dataclass(frozen=True)
class BreakdownLine:
    rule: str
    points: int
    detail: str


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: int
    amount: Decimal
    category: str | None = None


@dataclass(frozen=True)
class Event:
    """Base of all ledger events."""


@dataclass(frozen=True)
class ProgramConfigured(Event):
    config: dict[str, Any]


@dataclass(frozen=True)
class MemberEnrolled(Event):
    member_id: str
    external_id: str
    enrolled_at: datetime
    email: str | None = None
    phone: str | None = None
    birthday: date | None = None
    locale: str | None = None
    time_zone: str | None = None
    consents: dict[str, bool] = field(default_factory=dict)
    referred_by: str | None = None
    first_name: str | None = None
    last_name: str | None = None


@dataclass(frozen=True)
class CardLinked(Event):
    card_token: str


@dataclass(frozen=True)
class CardUnlinked(Event):
    card_token: str


@dataclass(frozen=True)
class PointsEarned(Event):
    transaction_id: str
    lot_id: str
    kind: str  # "purchase" or "bonus"
    points: int
    qualifying_points: int
    qualifying_month: str
    earned_at: datetime
    expires_at: datetime
    available_at: datetime | None  # None: spendable at once
    debt_paid: int = 0
    order_id: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    channel: str | None = None
    store_id: str | None = None
    partner_id: str | None = None
    lines: tuple[OrderLine, ...] = ()
    breakdown: tuple[BreakdownLine, ...] = ()


@dataclass(frozen=True)
class PendingPointsActivated(Event):
    lot_id: str
    points: int
    activated_at: datetime
    debt_paid: int = 0


@dataclass(frozen=True)
class PointsRedeemed(Event):
    transaction_id: str
    points: int
    allocations: tuple[Allocation, ...]
    redeemed_at: datetime
    reward: str | None = None
    order_id: str | None = None


@dataclass(frozen=True)
class PointsAdjusted(Event):
    """A manual correction. Positive adjustments open a lot; negative ones consume lots."""

    transaction_id: str
    points: int
    adjusted_at: datetime
    lot_id: str | None = None
    expires_at: datetime | None = None
    allocations: tuple[Allocation, ...] = ()
    debt_paid: int = 0


@dataclass(frozen=True)
class EarnReversed(Event):
    """Points of an earn taken back (refund, cancelled order).

    ``points`` is the nominal amount reversed; ``allocations`` what was actually
    taken from lots; ``debt_recorded`` and ``forgiven`` account for the rest, as the
    program's return policy decides.
    """

    transaction_id: str
    original_transaction_id: str
    points: int
    qualifying_points: int
    qualifying_month: str
    reversed_at: datetime
    allocations: tuple[Allocation, ...] = ()
    debt_recorded: int = 0
    forgiven: int = 0
    amount: Decimal | None = None


@dataclass(frozen=True)
class RedemptionReversed(Event):
    """Redeemed points given back to the lots they came from, with their original expiry."""

    transaction_id: str
    original_transaction_id: str
    points: int
    allocations: tuple[Allocation, ...]
    reversed_at: datetime


@dataclass(frozen=True)
class PointsExpired(Event):
    lot_id: str
    points: int
    expired_at: datetime


@dataclass(frozen=True)
class QualificationPeriodEnded(Event):
    period_start: datetime
    period_end: datetime
    qualifying_points: int


@dataclass(frozen=True)
class CouponIssued(Event):
    """A coupon given to the member: an amount off (in ``currency``) or a percentage."""

    coupon_id: str
    code: str
    kind: str
    value: Decimal
    points_cost: int
    valid_from: datetime
    valid_until: datetime
    issued_at: datetime
    currency: str | None = None
    campaign_id: str | None = None


@dataclass(frozen=True)
class CouponRedeemed(Event):
    """A coupon used at the till; its points cost, if any, is a PointsRedeemed beside it."""

    coupon_id: str
    redeemed_at: datetime
    order_id: str | None = None
    order_amount: Decimal | None = None
    currency: str | None = None
    transaction_id: str | None = None


@dataclass(frozen=True)
class ConsentsChanged(Event):
    """The member gave or withdrew consent per channel; the channels not named keep theirs."""

    consents: dict[str, bool]
    changed_at: datetime
    source: str | None = None


# The profile fields a member (or the merchant for them) may change after enrolment.
PROFILE_FIELDS = ("email", "phone", "first_name", "last_name", "locale", "time_zone", "birthday")


@dataclass(frozen=True)
class MemberProfileChanged(Event):
    """Profile fields that changed. A field that is set holds its new value; ``cleared``
    names the fields that no longer have one; a field neither set nor cleared did not
    change (None alone cannot say "unchanged" and "removed" apart)."""

    changed_at: datetime
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    time_zone: str | None = None
    birthday: date | None = None
    cleared: tuple[str, ...] = ()


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        ProgramConfigured,
        MemberEnrolled,
        CardLinked,
        CardUnlinked,
        PointsEarned,
        PendingPointsActivated,
        PointsRedeemed,
        PointsAdjusted,
        EarnReversed,
        RedemptionReversed,
        PointsExpired,
        QualificationPeriodEnded,
        CouponIssued,
        CouponRedeemed,
        ConsentsChanged,
        MemberProfileChanged,
    )
}


def occurred_at(event: Event) -> datetime | None:
    """The business time an event carries, where it carries one."""
    for name in (
        "earned_at",
        "activated_at",
        "redeemed_at",
        "adjusted_at",
        "reversed_at",
        "expired_at",
        "period_end",
        "enrolled_at",
        "issued_at",
        "changed_at",
    ):
        value = getattr(event, name, None)
        if isinstance(value, datetime):
            return value
    return None
