"""Request bodies of the REST API. Unknown fields are refused."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
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


_PHONE_SEPARATORS = re.compile(r"[\s\-.()]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _phone(value: str) -> str:
    """E.164 from the forms people type: separators dropped, "00" taken for "+", and a
    leading space taken for the "+" that an unencoded query string decodes to one."""
    number = _PHONE_SEPARATORS.sub("", value)
    if value.startswith(" ") and number.isdigit():
        number = "+" + number
    elif number.startswith("00"):
        number = "+" + number[2:]
    if not _E164.match(number):
        raise ValueError("must be a phone number in E.164 form, such as +4791234567")
    return number


def _name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _birthday(value: date) -> date:
    if not date(1900, 1, 1) <= value <= date.today():
        raise ValueError("birthday must lie between 1900 and today")
    return value


Money = Annotated[str, Field(max_length=20, examples=["499.90"]), AfterValidator(_money)]
Amount = Annotated[Money, AfterValidator(_positive)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["NOK"])]
PastInstant = Annotated[AwareDatetime, AfterValidator(_not_future)]
Identifier = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$")]
Points = Annotated[int, Field(ge=1, le=MAX_POINTS)]
Text = Annotated[str, Field(min_length=1, max_length=500)]
Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Phone = Annotated[str, Field(max_length=40, examples=["+4791234567"]), AfterValidator(_phone)]
PersonName = Annotated[str, Field(max_length=100, examples=["Kari"]), AfterValidator(_name)]
Locale = Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")]
TimeZone = Annotated[str, AfterValidator(_zone)]
Birthday = Annotated[date, AfterValidator(_birthday)]
CardToken = Annotated[str, Field(min_length=4, max_length=128, pattern=r"^[A-Za-z0-9_\-:.]+$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrolRequest(_Body):
    external_id: Identifier
    email: Email | None = None
    phone: Phone | None = None
    birthday: Birthday | None = None
    locale: Locale | None = None
    time_zone: TimeZone | None = None
    consents: dict[Literal["email", "sms", "push"], bool] = Field(default_factory=dict)
    referred_by: UUID | None = None
    first_name: PersonName | None = None
    last_name: PersonName | None = None


class ProfileRequest(_Body):
    """A JSON merge patch of the profile: a field left out keeps its value, a field set
    to null loses it."""

    email: Email | None = None
    phone: Phone | None = None
    first_name: PersonName | None = None
    last_name: PersonName | None = None
    locale: Locale | None = None
    time_zone: TimeZone | None = None
    birthday: Birthday | None = None

    def changes(self) -> dict[str, Any]:
        """The fields the patch names, with their new values (None: remove)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


# What a member can be looked up by (GET /v1/members), each validated as it is on input.
LOOKUP_KEYS: dict[str, TypeAdapter[str]] = {
    "external_id": TypeAdapter(Identifier),
    "card_token": TypeAdapter(CardToken),
    "email": TypeAdapter(Email),
    "phone": TypeAdapter(Phone),
}


class CardRequest(_Body):
    card_token: CardToken


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
