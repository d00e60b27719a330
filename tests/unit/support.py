"""Builders shared by the pure domain tests: a fixed program, members and purchases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ledger.domain.account import EarnBonus, MemberAccount, Purchase
from ledger.domain.events import MemberEnrolled, OrderLine
from ledger.domain.program import (
    ProgramConfig,
    ReturnPolicy,
    Rounding,
)
from loyalty_common.calendar import LifetimeKind, PointLifetime, QualificationKind

OSLO = "Europe/Oslo"

BASE_CONFIG = ProgramConfig(
    name="Test Club",
    default_locale="nb-NO",
    time_zone=OSLO,
    earn_rates={"NOK": Decimal(1)},
    rounding=Rounding.DOWN,
    point_lifetime=PointLifetime(LifetimeKind.ROLLING_MONTHS, months=24),
    pending_days=0,
    return_policy=ReturnPolicy.DEBT,
    qualification_kind=QualificationKind.CALENDAR_YEAR,
)


def config(**changes: Any) -> ProgramConfig:
    return replace(BASE_CONFIG, **changes)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


def enrol(at: datetime = utc(2024, 1, 10, 12), member_id: str = "m-1") -> MemberAccount:
    return MemberAccount.enrol(
        MemberEnrolled(member_id=member_id, external_id="ext-1", enrolled_at=at)
    )


def purchase(
    amount: str | int,
    at: datetime,
    order_id: str = "o-1",
    currency: str = "NOK",
    *,
    channel: str = "store",
    store_id: str | None = None,
    lines: tuple[OrderLine, ...] = (),
) -> Purchase:
    return Purchase(
        order_id=order_id,
        amount=Decimal(amount),
        currency=currency,
        occurred_at=at,
        channel=channel,
        store_id=store_id,
        lines=lines,
    )


def earn(
    account: MemberAccount,
    cfg: ProgramConfig,
    amount: str | int,
    at: datetime,
    tx: str,
    *,
    now: datetime | None = None,
    multiplier: Decimal = Decimal(1),
) -> Any:
    return account.earn_purchase(
        purchase(amount, at, order_id=f"order-{tx}"),
        cfg,
        transaction_id=tx,
        lot_id=f"lot-{tx}",
        now=now or at,
        bonuses=(EarnBonus("tier", "Gold", multiplier),) if multiplier != 1 else (),
    )


def bonus(
    account: MemberAccount,
    cfg: ProgramConfig,
    points: int,
    at: datetime,
    tx: str,
    *,
    qualifying: bool = True,
    now: datetime | None = None,
) -> Any:
    return account.earn_bonus(
        points,
        "test bonus",
        cfg,
        qualifying=qualifying,
        transaction_id=tx,
        lot_id=f"lot-{tx}",
        occurred_at=at,
        now=now or at,
    )


def remaining(account: MemberAccount) -> dict[str, int]:
    return {lot_id: lot.remaining for lot_id, lot in account.lots.items()}
