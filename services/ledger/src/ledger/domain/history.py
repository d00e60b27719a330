"""A member's history: every change to a balance as an effect with an effective time.

The rule (ADR 0018): an effect is never effective before the effects it depends on.
Points taken from a lot are taken from points that were in it by then, so a take is
effective no earlier than the points it takes were added (an expiry no earlier than the
return it expires); a debt payment is effective no earlier than the debt it pays; and
nothing is effective before the member's enrolment. The balance as of T is the sum of
the effects effective at or before T: no component is ever negative, and for a T at or
after the last effective time it equals the account's own balance.

``History`` follows a member's events in recording order, beside (not inside) the
account, so the account's evolution stays the one source of its current state.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from loyalty_common.calendar import local_date_iso, months_between, period_containing

from ledger.domain.account import EXPIRY_HORIZON, Balance
from ledger.domain.events import (
    EarnReversed,
    Event,
    MemberEnrolled,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    RedemptionReversed,
)
from ledger.domain.program import ProgramConfig


def historic_balance(
    stream: list[tuple[Event, datetime]], as_of: datetime, config: ProgramConfig
) -> Balance:
    """The balance as of ``as_of`` from a member's recorded events (with the times they
    were recorded) and the time-driven facts due by then that were not yet recorded."""
    history = History()
    for event, recorded_at in stream:
        history.record(event, recorded_at)
    history.advance_to(as_of)
    return history.balance(as_of, config)


# An effect: (effective at, lot or None, available, pending, debt, lifetime earned).
Effect = tuple[datetime, str | None, int, int, int, int]


@dataclass(slots=True)
class _Part:
    """Points added to a lot, or owed, at one effective time."""

    at: datetime
    points: int


@dataclass(slots=True)
class _Lot:
    expires_at: datetime
    available_at: datetime | None  # while pending
    parts: list[_Part] = field(default_factory=list)  # earliest first

    @property
    def pending(self) -> bool:
        return self.available_at is not None

    @property
    def held(self) -> int:
        return sum(part.points for part in self.parts)


class History:
    """The effects of one member's events, each at its effective time."""

    def __init__(self) -> None:
        self.effects: list[Effect] = []
        self.qualifying: list[tuple[datetime, str, int]] = []
        self.enrolled_at: datetime | None = None  # effective
        self._enrolment: MemberEnrolled | None = None
        self._lots: dict[str, _Lot] = {}
        self._debts: list[_Part] = []  # still owed, oldest first
        self._earned_at: dict[str, datetime] = {}  # earn transaction -> effective at

    # -- following the events --------------------------------------------------------

    def record(self, event: Event, recorded_at: datetime | None = None) -> None:
        """Follow one event; ``recorded_at`` None for a time-driven fact not yet recorded."""
        match event:
            case PointsEarned():
                self._earned(event, self._time(event.earned_at, recorded_at))
            case PointsRedeemed():
                at = self._time(event.redeemed_at, recorded_at)
                for allocation in event.allocations:
                    self._take(allocation.lot_id, allocation.points, at)
            case PointsExpired():
                self._take(event.lot_id, event.points, self._time(event.expired_at))
            case PendingPointsActivated():
                self._activated(event, self._time(event.activated_at))
            case PointsAdjusted():
                self._adjusted(event, self._time(event.adjusted_at, recorded_at))
            case EarnReversed():
                self._earn_reversed(event, self._time(event.reversed_at, recorded_at))
            case RedemptionReversed():
                at = self._time(event.reversed_at, recorded_at)
                for allocation in event.allocations:
                    self._add(allocation.lot_id, allocation.points, at)
            case MemberEnrolled():
                self.enrolled_at = self._time(event.enrolled_at, recorded_at)
                self._enrolment = event
            case _:
                pass  # cards, consents, coupons, periods, profile: no points move

    def _time(self, business: datetime, recorded_at: datetime | None = None) -> datetime:
        """An event's own time: its business time, but never after the ledger learned of
        it (ADR 0006's ``least``); a time-driven fact is given none, as it takes effect at
        its own time. Never before the enrolment."""
        at = recorded_at if recorded_at is not None and recorded_at < business else business
        enrolled = self.enrolled_at
        return enrolled if enrolled is not None and at < enrolled else at

    def _earned(self, event: PointsEarned, at: datetime) -> None:
        points, lot_id = event.points, event.lot_id
        pending = event.available_at is not None
        self._lots[lot_id] = _Lot(
            event.expires_at, event.available_at, [_Part(at, points)] if points else []
        )
        self._earned_at[event.transaction_id] = at
        self.effects.append(
            (at, lot_id, 0, points, 0, points) if pending else (at, lot_id, points, 0, 0, points)
        )
        if event.qualifying_points:
            self.qualifying.append((at, event.qualifying_month, event.qualifying_points))
        if event.debt_paid:
            self._pay_debt(lot_id, event.debt_paid, at)

    def _activated(self, event: PendingPointsActivated, at: datetime) -> None:
        lot = self._lots[event.lot_id]
        for part in lot.parts:
            part.at = max(at, part.at)
            self.effects.append((part.at, event.lot_id, part.points, -part.points, 0, 0))
        lot.parts.sort(key=lambda part: part.at)
        lot.available_at = None
        self._pay_debt(event.lot_id, event.debt_paid, at)

    def _adjusted(self, event: PointsAdjusted, at: datetime) -> None:
        if event.points > 0:
            assert event.lot_id is not None and event.expires_at is not None
            self._lots[event.lot_id] = _Lot(event.expires_at, None)
            self._add(event.lot_id, event.points, at)
            self._pay_debt(event.lot_id, event.debt_paid, at)
        for allocation in event.allocations:
            self._take(allocation.lot_id, allocation.points, at)

    def _earn_reversed(self, event: EarnReversed, at: datetime) -> None:
        at = max(at, self._earned_at.get(event.original_transaction_id, at))
        for allocation in event.allocations:
            self._take(allocation.lot_id, allocation.points, at)
        self.effects.append((at, None, 0, 0, event.debt_recorded, -event.points))
        self.qualifying.append((at, event.qualifying_month, -event.qualifying_points))
        if event.debt_recorded:
            self._debts.append(_Part(at, event.debt_recorded))

    # -- lots and debt ---------------------------------------------------------------

    def _add(self, lot_id: str, points: int, at: datetime) -> None:
        if points <= 0:
            return
        lot = self._lots[lot_id]
        bisect.insort(lot.parts, _Part(at, points), key=lambda part: part.at)
        self.effects.append(
            (at, lot_id, 0, points, 0, 0) if lot.pending else (at, lot_id, points, 0, 0, 0)
        )

    def _take(self, lot_id: str, points: int, at: datetime, *, debt: bool = False) -> None:
        """Take points from a lot, each part no earlier than it was added; ``debt``: the
        points pay debt (the caller has already dated them no earlier than the debt)."""
        lot = self._lots[lot_id]
        while points > 0:
            assert lot.parts, f"lot {lot_id} gives more than it holds"
            first = lot.parts[0]
            take = min(points, first.points)
            when = max(at, first.at)
            paid = -take if debt else 0
            self.effects.append(
                (when, lot_id, 0, -take, paid, 0)
                if lot.pending
                else (when, lot_id, -take, 0, paid, 0)
            )
            first.points -= take
            if first.points == 0:
                lot.parts.pop(0)
            points -= take

    def _pay_debt(self, lot_id: str, points: int, at: datetime) -> None:
        while points > 0:
            assert self._debts, "debt paid that was never recorded"
            owed = self._debts[0]
            take = min(points, owed.points)
            self._take(lot_id, take, max(at, owed.at), debt=True)
            owed.points -= take
            if owed.points == 0:
                self._debts.pop(0)
            points -= take

    def advance_to(self, as_of: datetime) -> None:
        """The time-driven facts due by ``as_of`` that were not recorded: activations and
        expiries in the order ``MemberAccount.advance_to`` records them (the property test
        of the account holds the two to the same balances)."""
        due: list[tuple[datetime, int, str]] = []
        for lot_id, lot in self._lots.items():
            if lot.available_at is not None and lot.available_at <= as_of:
                due.append((lot.available_at, 0, lot_id))
            if lot.parts and lot.expires_at <= as_of:
                due.append((lot.expires_at, 1, lot_id))
        for at, order, lot_id in sorted(due):
            lot = self._lots[lot_id]
            held = lot.held
            if order == 0 and lot.pending:
                debt = sum(owed.points for owed in self._debts)
                self.record(PendingPointsActivated(lot_id, held, at, debt_paid=min(debt, held)))
            elif order == 1 and held > 0:
                self.record(PointsExpired(lot_id, held, at))

    # -- reading ---------------------------------------------------------------------

    def balance(self, as_of: datetime, config: ProgramConfig) -> Balance:
        """The balance as of ``as_of``: the sum of the effects effective by then."""
        assert self._enrolment is not None, "a history starts with the enrolment"
        available = pending = debt = lifetime = 0
        held: dict[str, int] = defaultdict(int)
        for at, lot_id, d_available, d_pending, d_debt, d_lifetime in self.effects:
            if at > as_of:
                continue
            available += d_available
            pending += d_pending
            debt += d_debt
            lifetime += d_lifetime
            if lot_id is not None:
                held[lot_id] += d_available + d_pending
        start, end = period_containing(
            as_of, config.qualification_kind, self._enrolment.enrolled_at, config.time_zone
        )
        months = set(months_between(start, end, config.time_zone))
        qualifying = sum(p for at, m, p in self.qualifying if at <= as_of and m in months)
        expiring: dict[str, int] = defaultdict(int)
        for lot_id, points in held.items():
            expires_at = self._lots[lot_id].expires_at
            if points > 0 and as_of < expires_at <= as_of + EXPIRY_HORIZON:
                expiring[local_date_iso(expires_at, config.time_zone)] += points
        return Balance(
            available=available,
            pending=pending,
            debt=debt,
            lifetime_earned=lifetime,
            qualifying_points=qualifying,
            qualification_period_start=start,
            qualification_period_end=end,
            expiring=tuple(sorted(expiring.items())),
        )

    def effective_times(self) -> list[datetime]:
        return [effect[0] for effect in self.effects]
