"""Calendar arithmetic in a program's time zone: lifetimes and qualification periods.

Shared by the ledger (which closes periods) and the rules service (which keeps tiers).

Qualifying points are kept in monthly buckets (``YYYY-MM`` in the program's time
zone) so that every period kind can be summed from them: a calendar year is its
twelve months, a rolling period the trailing twelve, and an anniversary period the
twelve months from the member's enrolment month (periods start on the first day of
that month, as airline programmes count them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class LifetimeKind(StrEnum):
    ROLLING_MONTHS = "rolling_months"
    END_OF_YEAR = "end_of_year"


class QualificationKind(StrEnum):
    CALENDAR_YEAR = "calendar_year"
    ROLLING_12_MONTHS = "rolling_12_months"
    ANNIVERSARY = "anniversary"


@dataclass(frozen=True)
class PointLifetime:
    kind: LifetimeKind
    months: int | None = None
    years: int | None = None


def _local(at: datetime, tz: str) -> datetime:
    return at.astimezone(ZoneInfo(tz))


def _month_start(year: int, month: int, tz: str) -> datetime:
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def add_months(at: datetime, months: int, tz: str) -> datetime:
    """The same local wall-clock time ``months`` later, clamped to the month's last day."""
    local = _local(at, tz)
    month_index = local.month - 1 + months
    year, month = local.year + month_index // 12, month_index % 12 + 1
    next_month = datetime(year + month // 12, month % 12 + 1, 1)
    last_day = (next_month - timedelta(days=1)).day
    moved = local.replace(year=year, month=month, day=min(local.day, last_day), tzinfo=None)
    return moved.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


def expiry_for(earned_at: datetime, lifetime: PointLifetime, tz: str) -> datetime:
    """When points earned at ``earned_at`` expire.

    ``end_of_year`` with ``years: N`` counts the year of earning as the first year:
    ``years: 1`` expires at the end of that year, ``years: 2`` at the end of the next.
    """
    if lifetime.kind is LifetimeKind.ROLLING_MONTHS:
        assert lifetime.months is not None
        return add_months(earned_at, lifetime.months, tz)
    assert lifetime.years is not None
    year = _local(earned_at, tz).year + lifetime.years
    return _month_start(year, 1, tz)


def month_key(at: datetime, tz: str) -> str:
    local = _local(at, tz)
    return f"{local.year:04d}-{local.month:02d}"


def _month_index(at: datetime, tz: str) -> int:
    local = _local(at, tz)
    return local.year * 12 + local.month - 1


def _start_of_month_index(index: int, tz: str) -> datetime:
    return _month_start(index // 12, index % 12 + 1, tz)


def period_containing(
    at: datetime, kind: QualificationKind, enrolled_at: datetime, tz: str
) -> tuple[datetime, datetime]:
    """The qualification period ``[start, end)`` that ``at`` falls in."""
    index = _month_index(at, tz)
    if kind is QualificationKind.CALENDAR_YEAR:
        start_index = index - index % 12
    elif kind is QualificationKind.ANNIVERSARY:
        anchor = _month_index(enrolled_at, tz)
        start_index = index - (index - anchor) % 12
    else:
        # A rolling period ends with every month: its window is the trailing twelve.
        return _start_of_month_index(index - 11, tz), _start_of_month_index(index + 1, tz)
    return _start_of_month_index(start_index, tz), _start_of_month_index(start_index + 12, tz)


def months_between(start: datetime, end: datetime, tz: str) -> list[str]:
    """Bucket keys of the months in ``[start, end)``."""
    first, last = _month_index(start, tz), _month_index(end - timedelta(microseconds=1), tz)
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(first, last + 1)]


def local_date_iso(at: datetime, tz: str) -> str:
    return _local(at, tz).date().isoformat()
