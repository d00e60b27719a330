"""The program configuration document: validated on the way in, turned into domain config."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loyalty_common.calendar import LifetimeKind, PointLifetime, QualificationKind
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ledger.domain.program import (
    DowngradePolicy,
    ProgramConfig,
    ReturnPolicy,
    Rounding,
    Tier,
)

CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
EarnRate = Annotated[Decimal, Field(gt=0, le=10_000, max_digits=12, decimal_places=6)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointLifetimeDocument(_Strict):
    kind: Literal["rolling_months", "end_of_year"]
    months: int | None = Field(default=None, ge=1, le=120)
    years: int | None = Field(default=None, ge=1, le=10)

    @model_validator(mode="after")
    def _matching_length(self) -> PointLifetimeDocument:
        if self.kind == "rolling_months" and (self.months is None or self.years is not None):
            raise ValueError("rolling_months takes months (and no years)")
        if self.kind == "end_of_year" and (self.years is None or self.months is not None):
            raise ValueError("end_of_year takes years (and no months)")
        return self


class QualificationPeriodDocument(_Strict):
    kind: Literal["calendar_year", "rolling_12_months", "anniversary"]


class TierDocument(_Strict):
    name: str = Field(min_length=1, max_length=50)
    threshold: int = Field(ge=0, le=1_000_000_000)
    discount_percent: Decimal = Field(default=Decimal(0), ge=0, le=100, decimal_places=2)
    earn_multiplier: Decimal = Field(default=Decimal(1), gt=0, le=100, decimal_places=4)


class TierPolicyDocument(_Strict):
    """How the rules service keeps tiers; the ledger only validates and publishes it."""

    # Days a missed re-qualification leaves the tier in place after the period ends.
    grace_days: int = Field(default=0, ge=0, le=365)
    # TierProgress goes out once the points still needed are at most this share of
    # the next tier's threshold.
    progress_share: Decimal = Field(default=Decimal("0.1"), ge=0, le=1, decimal_places=4)
    # TierDowngradeWarning goes out this many days before a period ends unmet.
    downgrade_warning_days: int = Field(default=30, ge=0, le=365)


class ProgramDocument(_Strict):
    name: str = Field(min_length=1, max_length=200)
    default_locale: str = Field(default="en", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    time_zone: str = "UTC"
    earn_rates: dict[CurrencyCode, EarnRate] = Field(min_length=1, max_length=200)
    rounding: Literal["down", "nearest", "up"] = "down"
    point_lifetime: PointLifetimeDocument
    pending_days: int = Field(default=0, ge=0, le=365)
    return_policy: Literal["only_pending", "within_balance", "debt"] = "within_balance"
    qualification_period: QualificationPeriodDocument
    tiers: list[TierDocument] = Field(default_factory=list, max_length=20)
    downgrade_policy: Literal["one_down", "recompute"] = "one_down"
    tier_policy: TierPolicyDocument = Field(default_factory=TierPolicyDocument)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("tiers")
    @classmethod
    def _ladder(cls, tiers: list[TierDocument]) -> list[TierDocument]:
        if tiers and tiers[0].threshold != 0:
            raise ValueError("the first tier must have threshold 0")
        thresholds = [t.threshold for t in tiers]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("tier thresholds must be strictly increasing")
        if len({t.name for t in tiers}) != len(tiers):
            raise ValueError("tier names must be unique")
        return tiers

    def to_domain(self) -> ProgramConfig:
        lifetime = self.point_lifetime
        return ProgramConfig(
            name=self.name,
            default_locale=self.default_locale,
            time_zone=self.time_zone,
            earn_rates=dict(self.earn_rates),
            rounding=Rounding(self.rounding),
            point_lifetime=PointLifetime(
                LifetimeKind(lifetime.kind), lifetime.months, lifetime.years
            ),
            pending_days=self.pending_days,
            return_policy=ReturnPolicy(self.return_policy),
            qualification_kind=QualificationKind(self.qualification_period.kind),
            tiers=tuple(
                Tier(t.name, t.threshold, t.discount_percent, t.earn_multiplier) for t in self.tiers
            ),
            downgrade_policy=DowngradePolicy(self.downgrade_policy),
        )


def default_document(name: str) -> ProgramDocument:
    """What a new program starts with: a Nordic club earning one point per krone."""
    return ProgramDocument.model_validate(
        {
            "name": name,
            "default_locale": "nb",
            "time_zone": "Europe/Oslo",
            "earn_rates": {"NOK": "1", "SEK": "1", "DKK": "1.5", "EUR": "10"},
            "rounding": "down",
            "point_lifetime": {"kind": "rolling_months", "months": 24},
            "pending_days": 0,
            "return_policy": "debt",
            "qualification_period": {"kind": "calendar_year"},
            "tiers": [
                {"name": "Bronze", "threshold": 0, "discount_percent": 5, "earn_multiplier": "1"},
                {
                    "name": "Silver",
                    "threshold": 5000,
                    "discount_percent": 10,
                    "earn_multiplier": "1.25",
                },
                {
                    "name": "Gold",
                    "threshold": 15000,
                    "discount_percent": 15,
                    "earn_multiplier": "1.5",
                },
            ],
            "downgrade_policy": "one_down",
        }
    )
