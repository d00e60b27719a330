"""Request bodies of the rules API: validated here, stored as plain JSON documents."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

Name = Annotated[str, Field(min_length=1, max_length=200)]
Label = Annotated[str, Field(min_length=1, max_length=100)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BonusCampaignRequest(_Body):
    """Multiply base points of earns whose purchase time is in [starts_at, ends_at)."""

    name: Name
    multiplier: Decimal = Field(gt=1, le=100, max_digits=8, decimal_places=4)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    channels: list[Literal["online", "store", "partner"]] = Field(default=[], max_length=3)
    categories: list[Label] = Field(default=[], max_length=100)
    store_ids: list[Label] = Field(default=[], max_length=1000)
    tiers: list[Label] = Field(default=[], max_length=20)

    @model_validator(mode="after")
    def _window(self) -> BonusCampaignRequest:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class _CouponValue(_Body):
    kind: Literal["amount", "percent"]
    value: Decimal = Field(gt=0, max_digits=12, decimal_places=2)
    currency: CurrencyCode | None = None
    points_cost: int = Field(default=0, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _consistent(self) -> _CouponValue:
        if self.kind == "percent" and self.value > 100:
            raise ValueError("a percent coupon's value is at most 100")
        if self.kind == "amount" and self.currency is None:
            raise ValueError("an amount coupon needs a currency")
        if self.kind == "percent" and self.currency is not None:
            raise ValueError("a percent coupon takes no currency")
        return self


class OfferCoupon(_CouponValue):
    valid_from: AwareDatetime
    valid_until: AwareDatetime

    @model_validator(mode="after")
    def _window(self) -> OfferCoupon:
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self


class TriggerCoupon(_CouponValue):
    """A coupon issued by a trigger: valid from issue for `valid_days` days."""

    valid_days: int = Field(ge=1, le=3650)


class TierSegment(_Body):
    kind: Literal["tier"]
    tiers: list[Label] = Field(min_length=1, max_length=20)


class TopSpendersSegment(_Body):
    kind: Literal["top_spenders"]
    n: int = Field(ge=1, le=1_000_000)
    since: AwareDatetime
    until: AwareDatetime
    currency: CurrencyCode


class InactiveSegment(_Body):
    kind: Literal["inactive"]
    days: int = Field(ge=1, le=3650)


class BirthdaysSegment(_Body):
    kind: Literal["birthdays_this_month"]


class PunchCardSegment(_Body):
    kind: Literal["punch_card"]
    card_id: UUID


Segment = Annotated[
    TierSegment | TopSpendersSegment | InactiveSegment | BirthdaysSegment | PunchCardSegment,
    Field(discriminator="kind"),
]


class OfferCampaignRequest(_Body):
    """Issue a coupon to every member of a segment, as it stands at creation."""

    name: Name
    coupon: OfferCoupon
    segment: Segment


class Reward(_Body):
    """Bonus points or a coupon: exactly one of them."""

    points: int | None = Field(default=None, ge=1, le=10_000_000)
    coupon: TriggerCoupon | None = None

    @model_validator(mode="after")
    def _one(self) -> Reward:
        if (self.points is None) == (self.coupon is None):
            raise ValueError("a reward is either points or a coupon")
        return self


class ExpiryWarning(_Body):
    days_before: int = Field(ge=1, le=365)


class TriggersDocument(_Body):
    """A program's triggers; a trigger left out (or null) is off."""

    welcome: Reward | None = None
    birthday: Reward | None = None
    referral: Reward | None = None
    points_expiring: ExpiryWarning | None = None


class PunchCardRequest(_Body):
    name: Name
    category: Label
    size: int = Field(ge=1, le=1000)
    reward: Reward


class ClockRequest(_Body):
    as_of: datetime | None = None
