"""Request bodies of the REST API. Unknown fields are refused."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)

MAX_AMOUNT = Decimal("10000000")
MAX_POINTS = 1_000_000_000
CLOCK_SKEW = timedelta(minutes=5)
_DECIMAL = re.compile(r"^\d{1,12}(\.\d{1,4})?$")


def _money(value: str) -> Decimal:
    if not _DECIMAL.match(value):
        raise ValueError("must be a decimal string such as '499.90'")
    amount = Decimal(value)
    if amount > MAX_AMOUNT:
        raise ValueError(f"must be at most {MAX_AMOUNT}")
    return amount


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _not_future(value: datetime) -> datetime:
    if value > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError("lies more than 5 minutes in the future")
    if value.year < 2000:
        raise ValueError("lies before the year 2000")
    return value


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("unknown time zone") from exc
    return value


Money = Annotated[str, Field(max_length=20, examples=["499.90"]), AfterValidator(_money)]
Amount = Annotated[Money, AfterValidator(_positive)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["NOK"])]
PastInstant = Annotated[AwareDatetime, AfterValidator(_not_future)]
Identifier = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$")]
Points = Annotated[int, Field(ge=1, le=MAX_POINTS)]
Text = Annotated[str, Field(min_length=1, max_length=500)]
Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrolRequest(_Body):
    external_id: Identifier
    email: Email | None = None
    phone: Annotated[str, Field(pattern=r"^\+[1-9]\d{6,14}$")] | None = None
    birthday: date | None = None
    locale: Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] | None = None
    time_zone: Annotated[str, AfterValidator(_zone)] | None = None
    consents: dict[Literal["email", "sms", "push"], bool] = Field(default_factory=dict)
    referred_by: UUID | None = None

    @model_validator(mode="after")
    def _birthday_in_past(self) -> EnrolRequest:
        if self.birthday is not None and not date(1900, 1, 1) <= self.birthday <= date.today():
            raise ValueError("birthday must lie between 1900 and today")
        return self


class CardRequest(_Body):
    card_token: Annotated[str, Field(min_length=4, max_length=128, pattern=r"^[A-Za-z0-9_\-:.]+$")]


class OrderLineModel(_Body):
    sku: Identifier
    quantity: Annotated[int, Field(ge=1, le=100_000)]
    amount: Money
    category: Identifier | None = None


class EarnRequest(_Body):
    """A purchase, or (with the ops scope) explicit bonus points with a reason."""

    order_id: Identifier | None = None
    amount: Amount | None = None
    currency: Currency | None = None
    occurred_at: PastInstant | None = None
    channel: Literal["online", "store", "partner"] | None = None
    store_id: Identifier | None = None
    partner_id: Identifier | None = None
    lines: list[OrderLineModel] = Field(default_factory=list, max_length=500)
    points: Points | None = None
    reason: Text | None = None
    qualifying: bool = False

    @model_validator(mode="after")
    def _one_shape(self) -> EarnRequest:
        if self.points is not None:
            purchase_fields = [
                n
                for n in ("order_id", "amount", "currency", "channel")
                if getattr(self, n) is not None
            ]
            if purchase_fields:
                raise ValueError(f"bonus points take no purchase fields: {purchase_fields}")
            if self.reason is None:
                raise ValueError("bonus points need a reason")
            return self
        missing = [
            n
            for n in ("order_id", "amount", "currency", "occurred_at", "channel")
            if getattr(self, n) is None
        ]
        if missing:
            raise ValueError(f"a purchase needs {', '.join(missing)}")
        if self.channel == "partner" and self.partner_id is None:
            raise ValueError("a partner purchase needs partner_id")
        return self


class RedeemRequest(_Body):
    points: Points
    reward: Text | None = None
    order_id: Identifier | None = None


class ReverseRequest(_Body):
    """Nothing: reverse all that is left. ``points`` or ``amount``: reverse that part."""

    points: Points | None = None
    amount: Amount | None = None
    reason: Text | None = None


class AdjustRequest(_Body):
    points: Annotated[int, Field(ge=-MAX_POINTS, le=MAX_POINTS)]
    reason: Text


class CouponRequest(_Body):
    """A coupon for a member: an amount off (with its currency) or a percentage."""

    kind: Literal["amount", "percent"]
    value: Amount
    currency: Currency | None = None
    points_cost: Annotated[int, Field(ge=0, le=MAX_POINTS)] = 0
    valid_from: AwareDatetime
    valid_until: AwareDatetime
    campaign_id: UUID | None = None
    reason: Text | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CouponRequest:
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must lie after valid_from")
        if self.kind == "amount" and self.currency is None:
            raise ValueError("an amount coupon needs a currency")
        if self.kind == "percent" and Decimal(self.value) > 100:
            raise ValueError("a percentage is at most 100")
        return self


class CouponRedeemRequest(_Body):
    """The order a coupon is used on; its amount counts as the campaign's revenue."""

    order_id: Identifier | None = None
    order_amount: Amount | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
    def _currency_with_amount(self) -> CouponRedeemRequest:
        if self.order_amount is not None and self.currency is None:
            raise ValueError("an order_amount needs its currency")
        return self


class ConsentsRequest(_Body):
    """Consent per channel to change; channels left out keep theirs."""

    consents: Annotated[dict[Literal["email", "sms", "push"], StrictBool], Field(min_length=1)]
    source: Text | None = None


CorrelationId = Annotated[str | None, Field(alias="X-Correlation-Id", max_length=100)]


class ReadHeaders(BaseModel):
    """The headers every authenticated request may carry (besides Authorization)."""

    correlation_id: CorrelationId = None


class WriteHeaders(BaseModel):
    """The headers of a write."""

    idempotency_key: str = Field(
        alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"
    )
    correlation_id: CorrelationId = None
    causation_id: str | None = Field(
        default=None,
        alias="X-Causation-Id",
        max_length=100,
        description="the event that caused the write",
    )
