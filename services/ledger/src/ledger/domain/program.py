"""Program configuration: the rules a program earns, expires and qualifies by."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from enum import StrEnum

from loyalty_common.calendar import PointLifetime, QualificationKind


class Rounding(StrEnum):
    DOWN = "down"
    NEAREST = "nearest"
    UP = "up"

    def apply(self, value: Decimal) -> int:
        mode = {
            Rounding.DOWN: ROUND_FLOOR,
            Rounding.NEAREST: ROUND_HALF_UP,
            Rounding.UP: ROUND_CEILING,
        }[self]
        return int(value.to_integral_value(rounding=mode))


class ReturnPolicy(StrEnum):
    ONLY_PENDING = "only_pending"
    WITHIN_BALANCE = "within_balance"
    DEBT = "debt"


class DowngradePolicy(StrEnum):
    ONE_DOWN = "one_down"
    RECOMPUTE = "recompute"


@dataclass(frozen=True)
class Tier:
    name: str
    threshold: int
    discount_percent: Decimal = Decimal(0)
    earn_multiplier: Decimal = Decimal(1)


@dataclass(frozen=True)
class ProgramConfig:
    name: str
    default_locale: str
    time_zone: str
    earn_rates: dict[str, Decimal]
    rounding: Rounding
    point_lifetime: PointLifetime
    pending_days: int
    return_policy: ReturnPolicy
    qualification_kind: QualificationKind
    tiers: tuple[Tier, ...] = field(default_factory=tuple)
    downgrade_policy: DowngradePolicy = DowngradePolicy.ONE_DOWN
