"""Events and account state to and from their stored JSON forms."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from ledger.domain.account import Coupon, Lot, MemberAccount, Transaction
from ledger.domain.events import EVENT_TYPES, Allocation, Event


@cache
def _adapter(event_type: str) -> TypeAdapter[Any]:
    return TypeAdapter(EVENT_TYPES[event_type])


def encode_event(event: Event) -> tuple[str, dict[str, Any]]:
    name = type(event).__name__
    return name, _adapter(name).dump_python(event, mode="json")


def decode_event(event_type: str, data: dict[str, Any]) -> Event:
    event: Event = _adapter(event_type).validate_python(data)
    return event


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def profile_of(account: MemberAccount) -> dict[str, Any]:
    return {
        "first_name": account.first_name,
        "last_name": account.last_name,
        "email": account.email,
        "phone": account.phone,
        "birthday": account.birthday.isoformat() if account.birthday else None,
        "locale": account.locale,
        "time_zone": account.time_zone,
        "consents": account.consents,
        "referred_by": account.referred_by,
    }


MEMBER_COLUMNS = (  # the members table's columns, in member_row's order
    "member_id",
    "program_id",
    "external_id",
    "version",
    "enrolled_at",
    "profile",
    "available",
    "pending",
    "debt",
    "lifetime_earned",
    "qualifying",
    "periods_closed_until",
    "next_period_end",
)


def member_row(
    account: MemberAccount, program_id: UUID, next_period_end: datetime
) -> tuple[Any, ...]:
    """The ``members`` projection row of an account, in the table's column order."""
    return (
        account.member_id,
        program_id,
        account.external_id,
        account.version,
        account.enrolled_at,
        profile_of(account),
        account.available,
        account.pending,
        account.debt,
        account.lifetime_earned,
        account.qualifying,
        account.periods_closed_until,
        next_period_end,
    )


def lot_from_row(row: dict[str, Any]) -> Lot:
    return Lot(
        lot_id=str(row["lot_id"]),
        earned_at=_dt(row["earned_at"]),  # type: ignore[arg-type]
        expires_at=_dt(row["expires_at"]),  # type: ignore[arg-type]
        available_at=_dt(row["available_at"]),
        original=int(row["original"]),
        remaining=int(row["remaining"]),
        pending=bool(row["pending"]),
    )


def lot_to_row(lot: Lot) -> dict[str, Any]:
    return {
        "lot_id": lot.lot_id,
        "earned_at": lot.earned_at.isoformat(),
        "expires_at": lot.expires_at.isoformat(),
        "available_at": lot.available_at.isoformat() if lot.available_at else None,
        "original": lot.original,
        "remaining": lot.remaining,
        "pending": lot.pending,
    }


def transaction_from_row(row: dict[str, Any]) -> Transaction:
    return Transaction(
        transaction_id=str(row["transaction_id"]),
        kind=row["kind"],
        points=int(row["points"]),
        occurred_at=_dt(row["occurred_at"]),  # type: ignore[arg-type]
        qualifying_points=int(row["qualifying_points"]),
        qualifying_month=row["qualifying_month"],
        lot_id=str(row["lot_id"]) if row["lot_id"] else None,
        allocations=tuple(Allocation(a["lot_id"], a["points"]) for a in row["allocations"]),
        amount=Decimal(str(row["amount"])) if row["amount"] is not None else None,
        currency=row["currency"],
        order_id=row["order_id"],
        reversed_points=int(row["reversed_points"]),
        reversed_qualifying=int(row["reversed_qualifying"]),
        reversed_amount=Decimal(str(row["reversed_amount"])),
        returned=dict(row["returned"]),
    )


def transaction_to_row(tx: Transaction) -> dict[str, Any]:
    return {
        "transaction_id": tx.transaction_id,
        "kind": tx.kind,
        "points": tx.points,
        "occurred_at": tx.occurred_at.isoformat(),
        "qualifying_points": tx.qualifying_points,
        "qualifying_month": tx.qualifying_month,
        "lot_id": tx.lot_id,
        "allocations": [{"lot_id": a.lot_id, "points": a.points} for a in tx.allocations],
        "amount": str(tx.amount) if tx.amount is not None else None,
        "currency": tx.currency,
        "order_id": tx.order_id,
        "reversed_points": tx.reversed_points,
        "reversed_qualifying": tx.reversed_qualifying,
        "reversed_amount": str(tx.reversed_amount),
        "returned": tx.returned,
    }


def _decimal(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value is not None else None


def coupon_from_row(row: dict[str, Any]) -> Coupon:
    return Coupon(
        coupon_id=str(row["coupon_id"]),
        code=row["code"],
        kind=row["kind"],
        value=Decimal(str(row["value"])),
        points_cost=int(row["points_cost"]),
        valid_from=_dt(row["valid_from"]),  # type: ignore[arg-type]
        valid_until=_dt(row["valid_until"]),  # type: ignore[arg-type]
        issued_at=_dt(row["issued_at"]),  # type: ignore[arg-type]
        currency=row["currency"],
        campaign_id=str(row["campaign_id"]) if row["campaign_id"] else None,
        redeemed_at=_dt(row["redeemed_at"]),
        order_id=row["order_id"],
        order_amount=_decimal(row["order_amount"]),
        order_currency=row["order_currency"],
        transaction_id=str(row["transaction_id"]) if row["transaction_id"] else None,
    )


def coupon_columns(coupon: Coupon, program_id: Any, member_id: Any) -> tuple[Any, ...]:
    """The ``coupons`` projection row of a coupon, in the table's column order."""
    return (
        coupon.coupon_id,
        program_id,
        member_id,
        coupon.code,
        coupon.kind,
        coupon.value,
        coupon.currency,
        coupon.points_cost,
        coupon.valid_from,
        coupon.valid_until,
        coupon.issued_at,
        coupon.campaign_id,
        coupon.redeemed_at,
        coupon.order_id,
        coupon.order_amount,
        coupon.order_currency,
        coupon.transaction_id,
    )


COUPON_COLUMNS = (
    "coupon_id",
    "program_id",
    "member_id",
    "code",
    "kind",
    "value",
    "currency",
    "points_cost",
    "valid_from",
    "valid_until",
    "issued_at",
    "campaign_id",
    "redeemed_at",
    "order_id",
    "order_amount",
    "order_currency",
    "transaction_id",
)


def coupon_to_row(coupon: Coupon) -> dict[str, Any]:
    """A coupon as JSON for the save statement (program and member come from the save)."""
    values = dict(zip(COUPON_COLUMNS, coupon_columns(coupon, None, None), strict=True))
    return {
        key: value.isoformat()
        if isinstance(value, datetime)
        else str(value)
        if isinstance(value, Decimal)
        else value
        for key, value in values.items()
        if key not in ("program_id", "member_id")
    }


def account_from_row(row: Any) -> MemberAccount:
    profile = row["profile"]
    birthday = profile.get("birthday")
    return MemberAccount(
        member_id=str(row["member_id"]),
        external_id=row["external_id"],
        enrolled_at=row["enrolled_at"],
        email=profile.get("email"),
        phone=profile.get("phone"),
        birthday=date.fromisoformat(birthday) if birthday else None,
        locale=profile.get("locale"),
        time_zone=profile.get("time_zone"),
        consents=profile.get("consents") or {},
        referred_by=profile.get("referred_by"),
        first_name=profile.get("first_name"),
        last_name=profile.get("last_name"),
        version=row["version"],
        available=row["available"],
        pending=row["pending"],
        debt=row["debt"],
        lifetime_earned=row["lifetime_earned"],
        qualifying=dict(row["qualifying"]),
        periods_closed_until=row["periods_closed_until"],
    )
