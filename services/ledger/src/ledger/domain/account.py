"""The member account aggregate: point lots, balances, debt and qualifying points.

Commands decide and record events; ``apply`` evolves the state from an event and is
the only place state changes, so folding the stored events reproduces the state.
The aggregate may be loaded partially (the scalars plus the lots a command needs):
every command documents which lots it reads, and the repository loads those.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from loyalty_common.calendar import (
    expiry_for,
    local_date_iso,
    month_key,
    months_between,
    period_containing,
)

from ledger.domain.errors import (
    CouponAlreadyRedeemedError,
    CouponNotValidError,
    InsufficientPointsError,
    InvalidRequestError,
    LinesExceedPurchaseError,
    NotReversibleError,
    ReversalExceedsOriginalError,
    UnsupportedCurrencyError,
)
from ledger.domain.events import (
    PROFILE_FIELDS,
    Allocation,
    BreakdownLine,
    CardLinked,
    CardUnlinked,
    ConsentsChanged,
    CouponIssued,
    CouponRedeemed,
    EarnReversed,
    Event,
    MemberEnrolled,
    MemberProfileChanged,
    OrderLine,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    QualificationPeriodEnded,
    RedemptionReversed,
)
from ledger.domain.program import ProgramConfig, ReturnPolicy

EXPIRY_HORIZON = timedelta(days=90)


@dataclass
class Lot:
    lot_id: str
    earned_at: datetime
    expires_at: datetime
    available_at: datetime | None
    original: int
    remaining: int
    pending: bool


@dataclass
class Transaction:
    transaction_id: str
    kind: str  # earn, redemption, adjustment, reversal
    points: int
    occurred_at: datetime
    qualifying_points: int = 0
    qualifying_month: str | None = None
    lot_id: str | None = None
    allocations: tuple[Allocation, ...] = ()
    amount: Decimal | None = None
    currency: str | None = None
    order_id: str | None = None
    reversed_points: int = 0
    reversed_qualifying: int = 0
    reversed_amount: Decimal = Decimal(0)
    returned: dict[str, int] = field(default_factory=dict)


@dataclass
class Coupon:
    coupon_id: str
    code: str
    kind: str  # amount, percent
    value: Decimal
    points_cost: int
    valid_from: datetime
    valid_until: datetime
    issued_at: datetime
    currency: str | None = None
    campaign_id: str | None = None
    redeemed_at: datetime | None = None
    order_id: str | None = None
    order_amount: Decimal | None = None
    order_currency: str | None = None
    transaction_id: str | None = None


@dataclass(frozen=True)
class EarnBonus:
    """A multiplier on a purchase's points: the member's tier or a bonus campaign.

    It adds ``(multiplier - 1) x`` the unrounded base of the purchase, or of its order
    lines in ``categories`` when any are named, rounded by the program's rule.
    """

    rule: str  # tier, campaign
    name: str
    multiplier: Decimal
    categories: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Purchase:
    """A purchase and its order lines. A line's ``amount`` is the line total (all its
    units, after the line's discounts), so ``quantity`` does not scale it; the lines
    may leave part of the purchase out, never add up to more."""

    order_id: str
    amount: Decimal
    currency: str
    occurred_at: datetime
    channel: str
    store_id: str | None = None
    partner_id: str | None = None
    lines: tuple[OrderLine, ...] = ()

    def lines_amount(self, categories: frozenset[str] | None = None) -> Decimal:
        """The lines' total, of the lines in ``categories`` when given."""
        return sum(
            (
                line.amount
                for line in self.lines
                if categories is None or line.category in categories
            ),
            Decimal(0),
        )


def _with_bonuses(
    purchase: Purchase,
    rate: Decimal,
    base: int,
    config: ProgramConfig,
    bonuses: tuple[EarnBonus, ...],
) -> tuple[int, list[BreakdownLine]]:
    """A purchase's points with its bonuses, and a breakdown line per bonus that changes
    them.

    The points are the exact value (the unrounded base plus every exact extra) rounded
    once. A bonus's line is how far its extra moves the rounded running total, so the
    lines add up to the points, and a negative extra (a multiplier below 1) is never
    rounded away from zero on its own.
    """
    raw = purchase.amount * rate
    exact, points, lines = raw, base, []
    for bonus in bonuses:
        share = raw
        if bonus.categories:
            share = rate * purchase.lines_amount(bonus.categories)
        exact += share * (bonus.multiplier - 1)
        running = max(config.rounding.apply(exact), 0)
        if running != points:
            detail = f"{bonus.name} x {bonus.multiplier}"
            lines.append(BreakdownLine(bonus.rule, running - points, detail))
        points = running
    return points, lines


@dataclass(frozen=True)
class Balance:
    available: int
    pending: int
    debt: int
    lifetime_earned: int
    qualifying_points: int
    qualification_period_start: datetime
    qualification_period_end: datetime
    expiring: tuple[tuple[str, int], ...]


@dataclass
class MemberAccount:
    member_id: str
    external_id: str
    enrolled_at: datetime
    email: str | None = None
    phone: str | None = None
    birthday: Any = None
    locale: str | None = None
    time_zone: str | None = None
    consents: dict[str, bool] = field(default_factory=dict)
    referred_by: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    version: int = 0
    available: int = 0
    pending: int = 0
    debt: int = 0
    lifetime_earned: int = 0
    qualifying: dict[str, int] = field(default_factory=dict)
    periods_closed_until: datetime | None = None
    cards: set[str] = field(default_factory=set)
    lots: dict[str, Lot] = field(default_factory=dict)
    transactions: dict[str, Transaction] = field(default_factory=dict)
    coupons: dict[str, Coupon] = field(default_factory=dict)
    new_events: list[Event] = field(default_factory=list)
    touched_lots: set[str] = field(default_factory=set)
    touched_transactions: set[str] = field(default_factory=set)
    touched_coupons: set[str] = field(default_factory=set)

    # -- construction ----------------------------------------------------------------

    @classmethod
    def enrol(cls, event: MemberEnrolled) -> MemberAccount:
        account = cls(
            member_id=event.member_id, external_id=event.external_id, enrolled_at=event.enrolled_at
        )
        account._record(event)
        return account

    @classmethod
    def from_events(cls, events: list[Event]) -> MemberAccount:
        first = events[0]
        assert isinstance(first, MemberEnrolled), "a member stream starts with MemberEnrolled"
        account = cls(
            member_id=first.member_id, external_id=first.external_id, enrolled_at=first.enrolled_at
        )
        for event in events:
            account.apply(event)
        account.touched_lots.clear()
        account.touched_transactions.clear()
        account.touched_coupons.clear()
        return account

    def _record(self, event: Event) -> None:
        self.apply(event)
        self.new_events.append(event)

    # -- commands --------------------------------------------------------------------

    def link_card(self, card_token: str) -> None:
        if card_token not in self.cards:
            self._record(CardLinked(card_token=card_token))

    def unlink_card(self, card_token: str) -> None:
        if card_token in self.cards:
            self._record(CardUnlinked(card_token=card_token))

    def change_consents(
        self, consents: dict[str, bool], *, now: datetime, source: str | None = None
    ) -> ConsentsChanged | None:
        """Record the channels whose consent changes; None if nothing changes."""
        changed = {k: v for k, v in sorted(consents.items()) if self.consents.get(k) != v}
        if not changed:
            return None
        event = ConsentsChanged(consents=changed, changed_at=now, source=source)
        self._record(event)
        return event

    def change_profile(
        self, changes: Mapping[str, Any], *, now: datetime
    ) -> MemberProfileChanged | None:
        """Record the profile fields (``PROFILE_FIELDS``) whose value changes, None
        meaning "remove it"; None if nothing changes."""
        assert set(changes) <= set(PROFILE_FIELDS), sorted(set(changes) - set(PROFILE_FIELDS))
        changed = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if not changed:
            return None
        event = MemberProfileChanged(
            changed_at=now,
            cleared=tuple(k for k in PROFILE_FIELDS if k in changed and changed[k] is None),
            **{k: v for k, v in changed.items() if v is not None},
        )
        self._record(event)
        return event

    def earn_purchase(
        self,
        purchase: Purchase,
        config: ProgramConfig,
        *,
        transaction_id: str,
        lot_id: str,
        now: datetime,
        bonuses: tuple[EarnBonus, ...] = (),
    ) -> PointsEarned:
        """Points for a purchase, with a breakdown line per bonus. Reads no lots.

        Only the base points qualify for tiers."""
        rate = config.earn_rates.get(purchase.currency)
        if rate is None:
            raise UnsupportedCurrencyError(
                f"the program has no earn rate for {purchase.currency}",
                field="currency",
                supported=sorted(config.earn_rates),
            )
        # A category bonus multiplies the lines' amounts: lines beyond the purchase
        # would earn on money that was never paid.
        lines_amount = purchase.lines_amount()
        if lines_amount > purchase.amount:
            raise LinesExceedPurchaseError(
                f"the order lines add up to {lines_amount} {purchase.currency}, more than "
                f"the purchase's {purchase.amount}",
                field="lines",
                lines_amount=str(lines_amount),
                amount=str(purchase.amount),
            )
        raw = purchase.amount * rate
        base = config.rounding.apply(raw)
        breakdown = [
            BreakdownLine(
                "base",
                base,
                f"{purchase.amount} {purchase.currency} x {rate} points per unit = {raw}, "
                f"rounded {config.rounding.value}",
            )
        ]
        points, extras = _with_bonuses(purchase, rate, base, config, bonuses)
        breakdown.extend(extras)
        return self._earn(
            kind="purchase",
            points=points,
            qualifying_points=base,
            earned_at=purchase.occurred_at,
            config=config,
            transaction_id=transaction_id,
            lot_id=lot_id,
            now=now,
            order_id=purchase.order_id,
            amount=purchase.amount,
            currency=purchase.currency,
            channel=purchase.channel,
            store_id=purchase.store_id,
            partner_id=purchase.partner_id,
            lines=purchase.lines,
            breakdown=tuple(breakdown),
        )

    def earn_bonus(
        self,
        points: int,
        reason: str,
        config: ProgramConfig,
        *,
        qualifying: bool,
        transaction_id: str,
        lot_id: str,
        occurred_at: datetime,
        now: datetime,
    ) -> PointsEarned:
        """Explicit bonus points. Reads no lots."""
        if points <= 0:
            raise InvalidRequestError("bonus points must be positive", field="points")
        return self._earn(
            kind="bonus",
            points=points,
            qualifying_points=points if qualifying else 0,
            earned_at=occurred_at,
            config=config,
            transaction_id=transaction_id,
            lot_id=lot_id,
            now=now,
            breakdown=(BreakdownLine("bonus", points, reason),),
        )

    def _earn(
        self,
        *,
        kind: str,
        points: int,
        qualifying_points: int,
        earned_at: datetime,
        config: ProgramConfig,
        transaction_id: str,
        lot_id: str,
        now: datetime,
        **details: Any,
    ) -> PointsEarned:
        # Tills' clocks run a little ahead of ours (the API takes up to 5 minutes):
        # such a time is now, or the points would wait for the next clock run.
        earned_at = min(earned_at, now)
        available_at: datetime | None = earned_at + timedelta(days=config.pending_days)
        if available_at is not None and available_at <= now:
            available_at = None
        debt_paid = min(self.debt, points) if available_at is None else 0
        event = PointsEarned(
            transaction_id=transaction_id,
            lot_id=lot_id,
            kind=kind,
            points=points,
            qualifying_points=qualifying_points,
            qualifying_month=month_key(earned_at, config.time_zone),
            earned_at=earned_at,
            expires_at=expiry_for(earned_at, config.point_lifetime, config.time_zone),
            available_at=available_at,
            debt_paid=debt_paid,
            **details,
        )
        self._record(event)
        return event

    def redeem(
        self,
        points: int,
        *,
        transaction_id: str,
        now: datetime,
        reward: str | None = None,
        order_id: str | None = None,
    ) -> PointsRedeemed:
        """Spend points, soonest-expiring lots first. Reads all available lots."""
        if points <= 0:
            raise InvalidRequestError("points must be positive", field="points")
        event = PointsRedeemed(
            transaction_id=transaction_id,
            points=points,
            allocations=self._allocate(points),
            redeemed_at=now,
            reward=reward,
            order_id=order_id,
        )
        self._record(event)
        return event

    def issue_coupon(
        self,
        *,
        coupon_id: str,
        code: str,
        kind: str,
        value: Decimal,
        points_cost: int,
        valid_from: datetime,
        valid_until: datetime,
        now: datetime,
        currency: str | None = None,
        campaign_id: str | None = None,
    ) -> CouponIssued:
        if valid_until <= valid_from:
            raise InvalidRequestError("valid_until must lie after valid_from", field="valid_until")
        if kind == "amount" and currency is None:
            raise InvalidRequestError("an amount coupon needs a currency", field="currency")
        if kind == "percent" and not 0 < value <= 100:
            raise InvalidRequestError("a percentage lies in (0, 100]", field="value")
        event = CouponIssued(
            coupon_id=coupon_id,
            code=code,
            kind=kind,
            value=value,
            points_cost=points_cost,
            valid_from=valid_from,
            valid_until=valid_until,
            issued_at=now,
            currency=currency,
            campaign_id=campaign_id,
        )
        self._record(event)
        return event

    def redeem_coupon(
        self,
        coupon_id: str,
        *,
        now: datetime,
        transaction_id: str,
        order_id: str | None = None,
        order_amount: Decimal | None = None,
        currency: str | None = None,
    ) -> CouponRedeemed:
        """Use a coupon, paying its points cost. Reads all available lots if it has one."""
        coupon = self.coupons[coupon_id]
        if coupon.redeemed_at is not None:
            raise CouponAlreadyRedeemedError(
                "the coupon has been used", redeemed_at=coupon.redeemed_at.isoformat()
            )
        if not coupon.valid_from <= now < coupon.valid_until:
            raise CouponNotValidError(
                "the coupon cannot be used now",
                valid_from=coupon.valid_from.isoformat(),
                valid_until=coupon.valid_until.isoformat(),
            )
        paid = None
        if coupon.points_cost:
            paid = self.redeem(
                coupon.points_cost,
                transaction_id=transaction_id,
                now=now,
                reward=f"coupon {coupon.code}",
                order_id=order_id,
            ).transaction_id
        event = CouponRedeemed(
            coupon_id=coupon_id,
            redeemed_at=now,
            order_id=order_id,
            order_amount=order_amount,
            currency=currency,
            transaction_id=paid,
        )
        self._record(event)
        return event

    def adjust(
        self, points: int, config: ProgramConfig, *, transaction_id: str, lot_id: str, now: datetime
    ) -> PointsAdjusted:
        """A manual correction. Negative adjustments read all available lots."""
        if points == 0:
            raise InvalidRequestError("an adjustment must change the balance", field="points")
        if points > 0:
            event = PointsAdjusted(
                transaction_id=transaction_id,
                points=points,
                adjusted_at=now,
                lot_id=lot_id,
                expires_at=expiry_for(now, config.point_lifetime, config.time_zone),
                debt_paid=min(self.debt, points),
            )
        else:
            event = PointsAdjusted(
                transaction_id=transaction_id,
                points=points,
                adjusted_at=now,
                allocations=self._allocate(-points),
            )
        self._record(event)
        return event

    def reverse(
        self,
        original_transaction_id: str,
        config: ProgramConfig,
        *,
        transaction_id: str,
        now: datetime,
        points: int | None = None,
        amount: Decimal | None = None,
    ) -> EarnReversed | RedemptionReversed:
        """Reverse an earn or a redemption, fully (neither points nor amount) or in part.

        Reads the original transaction, the lots it touched and all available lots.
        """
        if points is not None and amount is not None:
            raise InvalidRequestError("give points or amount, not both", field="points")
        if points is not None and points <= 0:
            raise InvalidRequestError("points must be positive", field="points")
        if amount is not None and amount <= 0:
            raise InvalidRequestError("amount must be positive", field="amount")
        original = self.transactions[original_transaction_id]
        if original.kind == "earn":
            return self._reverse_earn(original, config, transaction_id, now, points, amount)
        if original.kind == "redemption":
            if amount is not None:
                raise InvalidRequestError("a redemption is reversed by points", field="amount")
            return self._reverse_redemption(original, transaction_id, now, points)
        raise NotReversibleError(f"a {original.kind} transaction cannot be reversed")

    def _reverse_earn(
        self,
        original: Transaction,
        config: ProgramConfig,
        transaction_id: str,
        now: datetime,
        points: int | None,
        amount: Decimal | None,
    ) -> EarnReversed:
        reversible = original.points - original.reversed_points
        reversed_amount = original.reversed_amount
        if amount is not None:
            if original.amount is None:
                raise InvalidRequestError(
                    "this earn has no amount; reverse by points", field="amount"
                )
            left = original.amount - original.reversed_amount
            if amount > left:
                raise ReversalExceedsOriginalError(
                    "the amount exceeds what is left of the original",
                    field="amount",
                    reversible_amount=str(left),
                )
            reversed_amount += amount
            target = (
                original.points
                if reversed_amount == original.amount
                else int(original.points * reversed_amount / original.amount)
            )
            # Earlier reversals by points may already cover this share of the amount.
            points = max(0, target - original.reversed_points)
        elif points is None:
            points = reversible
            if original.amount is not None:
                amount = original.amount - original.reversed_amount
        if reversible <= 0 and (amount is None or amount == 0):
            raise NotReversibleError("the transaction is already fully reversed")
        if points > reversible:
            raise ReversalExceedsOriginalError(
                "the points exceed what is left of the original",
                field="points",
                reversible_points=reversible,
            )
        done = original.reversed_points + points
        target_q = (
            original.qualifying_points
            if done == original.points
            else original.qualifying_points * done // original.points
        )
        qualifying = target_q - original.reversed_qualifying

        lot = self.lots[original.lot_id] if original.lot_id else None
        allocations: list[Allocation] = []
        rest = points
        takes_back = config.return_policy is not ReturnPolicy.ONLY_PENDING
        if lot is not None and (lot.pending or takes_back):
            take = min(rest, lot.remaining)
            if take:
                allocations.append(Allocation(lot.lot_id, take))
                rest -= take
        if rest and config.return_policy is not ReturnPolicy.ONLY_PENDING:
            exclude = lot.lot_id if lot is not None else None
            spendable = sum(
                other.remaining
                for other in self.lots.values()
                if not other.pending and other.lot_id != exclude
            )
            others = self._allocate(min(rest, spendable), exclude=exclude)
            allocations.extend(others)
            rest -= sum(a.points for a in others)
        debt = rest if config.return_policy is ReturnPolicy.DEBT else 0
        event = EarnReversed(
            transaction_id=transaction_id,
            original_transaction_id=original.transaction_id,
            points=points,
            qualifying_points=qualifying,
            qualifying_month=original.qualifying_month or month_key(now, config.time_zone),
            reversed_at=now,
            allocations=tuple(allocations),
            debt_recorded=debt,
            forgiven=rest - debt,
            amount=amount,
        )
        self._record(event)
        return event

    def _reverse_redemption(
        self, original: Transaction, transaction_id: str, now: datetime, points: int | None
    ) -> RedemptionReversed:
        reversible = original.points - original.reversed_points
        if reversible <= 0:
            raise NotReversibleError("the redemption is already fully reversed")
        points = reversible if points is None else points
        if points > reversible:
            raise ReversalExceedsOriginalError(
                "the points exceed what is left of the original",
                field="points",
                reversible_points=reversible,
            )
        back: list[Allocation] = []
        rest = points
        for allocation in reversed(original.allocations):
            can = allocation.points - original.returned.get(allocation.lot_id, 0)
            take = min(can, rest)
            if take > 0:
                back.append(Allocation(allocation.lot_id, take))
                rest -= take
            if rest == 0:
                break
        event = RedemptionReversed(
            transaction_id=transaction_id,
            original_transaction_id=original.transaction_id,
            points=points,
            allocations=tuple(back),
            reversed_at=now,
        )
        self._record(event)
        # Points returned to a lot past its expiry expire as they come back: at the
        # reversal, never at the lot's own (earlier) expiry, which would precede the
        # return it removes (ADR 0018).
        for allocation in back:
            if self.lots[allocation.lot_id].expires_at <= now:
                self._record(
                    PointsExpired(
                        lot_id=allocation.lot_id, points=allocation.points, expired_at=now
                    )
                )
        return event

    def advance_to(self, as_of: datetime, config: ProgramConfig) -> list[Event]:
        """Time-driven facts up to ``as_of``: activations, expiries, ended periods.

        Reads pending lots and lots expiring by ``as_of``. Idempotent: a second call with
        the same ``as_of`` records nothing.
        """
        due: list[tuple[datetime, int, str]] = []
        for lot in self.lots.values():
            if lot.pending and lot.available_at is not None and lot.available_at <= as_of:
                due.append((lot.available_at, 0, lot.lot_id))
            if lot.remaining > 0 and lot.expires_at <= as_of:
                due.append((lot.expires_at, 1, lot.lot_id))
        # Before any period closed, the next one to close is the one enrolment falls in
        # (the start of that period would name an earlier rolling window).
        closed = self.periods_closed_until or self.enrolled_at
        while True:
            start, end = period_containing(
                closed, config.qualification_kind, self.enrolled_at, config.time_zone
            )
            if end > as_of:
                break
            due.append((end, 2, start.isoformat()))
            closed = end
        before = len(self.new_events)
        for at, order, key in sorted(due):
            if order == 0:
                lot = self.lots[key]
                if lot.pending:
                    self._record(
                        PendingPointsActivated(
                            lot_id=key,
                            points=lot.remaining,
                            activated_at=at,
                            debt_paid=min(self.debt, lot.remaining),
                        )
                    )
            elif order == 1:
                lot = self.lots[key]
                if lot.remaining > 0:
                    self._record(PointsExpired(lot_id=key, points=lot.remaining, expired_at=at))
            else:
                start = datetime.fromisoformat(key)
                self._record(
                    QualificationPeriodEnded(
                        period_start=start,
                        period_end=at,
                        qualifying_points=self._qualifying_between(start, at, config),
                    )
                )
        return self.new_events[before:]

    def _allocate(self, points: int, exclude: str | None = None) -> tuple[Allocation, ...]:
        lots = sorted(
            (
                lot
                for lot in self.lots.values()
                if not lot.pending and lot.remaining > 0 and lot.lot_id != exclude
            ),
            key=lambda lot: (lot.expires_at, lot.earned_at, lot.lot_id),
        )
        spendable = sum(lot.remaining for lot in lots)
        if points > spendable:
            raise InsufficientPointsError(
                f"{points} points requested, {spendable} available", available=spendable
            )
        allocations = []
        rest = points
        for lot in lots:
            if rest == 0:
                break
            take = min(rest, lot.remaining)
            allocations.append(Allocation(lot.lot_id, take))
            rest -= take
        return tuple(allocations)

    # -- evolution -------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        self.version += 1
        match event:
            case MemberEnrolled():
                self.email, self.phone, self.birthday = event.email, event.phone, event.birthday
                self.locale, self.time_zone = event.locale, event.time_zone
                self.consents = dict(event.consents)
                self.referred_by = event.referred_by
                self.first_name, self.last_name = event.first_name, event.last_name
            case CardLinked():
                self.cards.add(event.card_token)
            case CardUnlinked():
                self.cards.discard(event.card_token)
            case ConsentsChanged():
                self.consents = {**self.consents, **event.consents}
            case MemberProfileChanged():
                for name in PROFILE_FIELDS:
                    if (value := getattr(event, name)) is not None:
                        setattr(self, name, value)
                for name in event.cleared:
                    setattr(self, name, None)
            case PointsEarned():
                pending = event.available_at is not None
                lot = Lot(
                    event.lot_id,
                    event.earned_at,
                    event.expires_at,
                    event.available_at,
                    event.points,
                    event.points - event.debt_paid,
                    pending,
                )
                self._put_lot(lot)
                if pending:
                    self.pending += lot.remaining
                else:
                    self.available += lot.remaining
                self.debt -= event.debt_paid
                self.lifetime_earned += event.points
                self._add_qualifying(event.qualifying_month, event.qualifying_points)
                self._put_transaction(
                    Transaction(
                        event.transaction_id,
                        "earn",
                        event.points,
                        event.earned_at,
                        qualifying_points=event.qualifying_points,
                        qualifying_month=event.qualifying_month,
                        lot_id=event.lot_id,
                        amount=event.amount,
                        currency=event.currency,
                        order_id=event.order_id,
                    )
                )
            case PendingPointsActivated():
                lot = self.lots[event.lot_id]
                lot.pending = False
                lot.remaining -= event.debt_paid
                self.pending -= event.points
                self.available += event.points - event.debt_paid
                self.debt -= event.debt_paid
                self.touched_lots.add(lot.lot_id)
            case PointsRedeemed():
                self._take(event.allocations)
                self._put_transaction(
                    Transaction(
                        event.transaction_id,
                        "redemption",
                        event.points,
                        event.redeemed_at,
                        allocations=event.allocations,
                        order_id=event.order_id,
                    )
                )
            case PointsAdjusted():
                if event.points > 0:
                    assert event.lot_id is not None and event.expires_at is not None
                    self._put_lot(
                        Lot(
                            event.lot_id,
                            event.adjusted_at,
                            event.expires_at,
                            None,
                            event.points,
                            event.points - event.debt_paid,
                            False,
                        )
                    )
                    self.available += event.points - event.debt_paid
                    self.debt -= event.debt_paid
                else:
                    self._take(event.allocations)
                self._put_transaction(
                    Transaction(
                        event.transaction_id,
                        "adjustment",
                        event.points,
                        event.adjusted_at,
                        lot_id=event.lot_id,
                        allocations=event.allocations,
                    )
                )
            case EarnReversed():
                self._take(event.allocations)
                self.debt += event.debt_recorded
                self.lifetime_earned -= event.points
                self._add_qualifying(event.qualifying_month, -event.qualifying_points)
                original = self.transactions[event.original_transaction_id]
                original.reversed_points += event.points
                original.reversed_qualifying += event.qualifying_points
                original.reversed_amount += event.amount or 0
                self.touched_transactions.add(original.transaction_id)
                self._put_transaction(
                    Transaction(event.transaction_id, "reversal", -event.points, event.reversed_at)
                )
            case RedemptionReversed():
                for allocation in event.allocations:
                    lot = self.lots[allocation.lot_id]
                    lot.remaining += allocation.points
                    self.available += allocation.points
                    self.touched_lots.add(lot.lot_id)
                original = self.transactions[event.original_transaction_id]
                original.reversed_points += event.points
                for allocation in event.allocations:
                    original.returned[allocation.lot_id] = (
                        original.returned.get(allocation.lot_id, 0) + allocation.points
                    )
                self.touched_transactions.add(original.transaction_id)
                self._put_transaction(
                    Transaction(event.transaction_id, "reversal", event.points, event.reversed_at)
                )
            case PointsExpired():
                lot = self.lots[event.lot_id]
                if lot.pending:
                    self.pending -= event.points
                    lot.pending = False
                else:
                    self.available -= event.points
                lot.remaining -= event.points
                self.touched_lots.add(lot.lot_id)
            case QualificationPeriodEnded():
                self.periods_closed_until = event.period_end
            case CouponIssued():
                self.coupons[event.coupon_id] = Coupon(
                    event.coupon_id,
                    event.code,
                    event.kind,
                    event.value,
                    event.points_cost,
                    event.valid_from,
                    event.valid_until,
                    event.issued_at,
                    event.currency,
                    event.campaign_id,
                )
                self.touched_coupons.add(event.coupon_id)
            case CouponRedeemed():
                coupon = self.coupons[event.coupon_id]
                coupon.redeemed_at, coupon.order_id = event.redeemed_at, event.order_id
                coupon.order_amount, coupon.order_currency = event.order_amount, event.currency
                coupon.transaction_id = event.transaction_id
                self.touched_coupons.add(event.coupon_id)
            case _:
                raise TypeError(f"not a member event: {type(event).__name__}")

    def _put_lot(self, lot: Lot) -> None:
        self.lots[lot.lot_id] = lot
        self.touched_lots.add(lot.lot_id)

    def _put_transaction(self, transaction: Transaction) -> None:
        self.transactions[transaction.transaction_id] = transaction
        self.touched_transactions.add(transaction.transaction_id)

    def _take(self, allocations: tuple[Allocation, ...]) -> None:
        for allocation in allocations:
            lot = self.lots[allocation.lot_id]
            lot.remaining -= allocation.points
            if lot.pending:
                self.pending -= allocation.points
            else:
                self.available -= allocation.points
            self.touched_lots.add(lot.lot_id)

    def _add_qualifying(self, month: str, points: int) -> None:
        if points:
            self.qualifying[month] = self.qualifying.get(month, 0) + points

    # -- views -----------------------------------------------------------------------

    def qualification_period(
        self, at: datetime, config: ProgramConfig
    ) -> tuple[datetime, datetime]:
        return period_containing(at, config.qualification_kind, self.enrolled_at, config.time_zone)

    def next_period_end(self, config: ProgramConfig) -> datetime:
        closed = self.periods_closed_until or self.enrolled_at
        return self.qualification_period(closed, config)[1]

    def _qualifying_between(self, start: datetime, end: datetime, config: ProgramConfig) -> int:
        return sum(self.qualifying.get(m, 0) for m in months_between(start, end, config.time_zone))

    def balance(self, as_of: datetime, config: ProgramConfig) -> Balance:
        """The balance at ``as_of``, with time-driven facts applied to a copy."""
        return copy.deepcopy(self).advanced_balance(as_of, config)

    def advanced_balance(self, as_of: datetime, config: ProgramConfig) -> Balance:
        """Applies the time-driven facts up to ``as_of`` to this account and gives its
        balance then: ``balance`` without the copy, for an account loaded only to be read
        (copying a long history's lots cost more than folding it)."""
        self.advance_to(as_of, config)
        start, end = self.qualification_period(as_of, config)
        expiring: dict[str, int] = defaultdict(int)
        for lot in self.lots.values():
            if lot.remaining > 0 and as_of < lot.expires_at <= as_of + EXPIRY_HORIZON:
                expiring[local_date_iso(lot.expires_at, config.time_zone)] += lot.remaining
        return Balance(
            available=self.available,
            pending=self.pending,
            debt=self.debt,
            lifetime_earned=self.lifetime_earned,
            qualifying_points=self._qualifying_between(start, end, config),
            qualification_period_start=start,
            qualification_period_end=end,
            expiring=tuple(sorted(expiring.items())),
        )
