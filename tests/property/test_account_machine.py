"""A member account driven by random commands and clock runs, checked after every step.

Each run picks a program (return policy, pending period, lifetime, qualification kind,
rounding), then earns, redeems, adjusts, reverses and moves the clock forward. After
every step the balances must match the lots, the recorded events must fold back into
the same account, and the reversal bookkeeping must add up; and the member's history
(ADR 0018) never shows a negative balance at any time and ends at the current one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from ledger.domain.account import Balance, EarnBonus, MemberAccount, Purchase
from ledger.domain.errors import (
    InsufficientPointsError,
    InvalidRequestError,
    NotReversibleError,
    ReversalExceedsOriginalError,
)
from ledger.domain.events import (
    Allocation,
    EarnReversed,
    Event,
    MemberEnrolled,
    OrderLine,
    PendingPointsActivated,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    QualificationPeriodEnded,
    RedemptionReversed,
)
from ledger.domain.history import History, historic_balance
from ledger.domain.program import (
    ProgramConfig,
    ReturnPolicy,
    Rounding,
)
from loyalty_common.calendar import LifetimeKind, PointLifetime, QualificationKind

LIFETIMES = [
    PointLifetime(LifetimeKind.ROLLING_MONTHS, months=24),
    PointLifetime(LifetimeKind.ROLLING_MONTHS, months=3),
    PointLifetime(LifetimeKind.END_OF_YEAR, years=1),
    PointLifetime(LifetimeKind.END_OF_YEAR, years=2),
]

# Enrolment anywhere in 2023-2025, at any minute: crosses DST switches and new years.
ENROLMENTS = st.integers(0, 3 * 365 * 24 * 60).map(
    lambda minutes: datetime(2023, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
)
# Mostly small steps, sometimes whole seasons: runs cross expiries and period ends.
STEPS = st.one_of(
    st.integers(0, 3 * 24 * 60),
    st.integers(0, 45 * 24 * 60),
    st.integers(0, 400 * 24 * 60),
).map(lambda minutes: timedelta(minutes=minutes))
AMOUNTS = st.decimals(min_value=0, max_value=3000, places=2, allow_nan=False, allow_infinity=False)
MULTIPLIERS = st.sampled_from(
    [
        Decimal(1),
        Decimal(1),
        Decimal("0.5"),
        Decimal("0.75"),
        Decimal("1.5"),
        Decimal(2),
        Decimal(3),
    ]
)
# A half-hour offset crosses local midnights and month ends where whole hours do not.
TIME_ZONES = st.sampled_from(["Europe/Oslo", "UTC", "Asia/Kolkata"])


@dataclass
class Original:
    """What the test itself knows about a reversible transaction."""

    kind: str  # earn or redemption
    points: int
    amount: Decimal | None
    reversed_points: int = 0
    reversed_amount: Decimal = Decimal(0)
    reversals: list[str] = field(default_factory=list)
    taken: dict[str, int] = field(default_factory=dict)  # a redemption's points per lot
    returned: dict[str, int] = field(default_factory=dict)


class AccountMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.counter = 0
        self.originals: dict[str, Original] = {}
        self.other_transactions: list[str] = []
        self.recorded: list[datetime] = []  # when each event was recorded
        # After each step: its time, the events recorded by then, the balance shown then.
        self.shown: list[tuple[datetime, int, Balance]] = []

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter:03d}"

    @property
    def events(self) -> list[Event]:
        return self.account.new_events

    # -- setup ---------------------------------------------------------------------------

    @initialize(
        policy=st.sampled_from(ReturnPolicy),
        pending_days=st.sampled_from([0, 14]),
        lifetime=st.sampled_from(LIFETIMES),
        qualification=st.sampled_from(QualificationKind),
        rounding=st.sampled_from(Rounding),
        enrolled_at=ENROLMENTS,
        time_zone=TIME_ZONES,
    )
    def enrol(
        self,
        policy: ReturnPolicy,
        pending_days: int,
        lifetime: PointLifetime,
        qualification: QualificationKind,
        rounding: Rounding,
        enrolled_at: datetime,
        time_zone: str,
    ) -> None:
        self.config = ProgramConfig(
            name="Machine Club",
            default_locale="nb-NO",
            time_zone=time_zone,
            earn_rates={"NOK": Decimal(1)},
            rounding=rounding,
            point_lifetime=lifetime,
            pending_days=pending_days,
            return_policy=policy,
            qualification_kind=qualification,
        )
        self.now = enrolled_at
        self.account = MemberAccount.enrol(
            MemberEnrolled(member_id="member", external_id="ext", enrolled_at=enrolled_at)
        )

    # -- earning -------------------------------------------------------------------------

    @rule(
        step=STEPS,
        amount=AMOUNTS,
        multiplier=MULTIPLIERS,
        late=st.one_of(
            st.sampled_from([timedelta(0)] * 4 + [timedelta(days=3), timedelta(days=20)]),
            # Anywhere in the last month: before refunds, redemptions and returns.
            st.integers(0, 30 * 24 * 60).map(lambda minutes: timedelta(minutes=minutes)),
        ),
        pet_share=st.sampled_from([Decimal(0), Decimal("0.25"), Decimal("0.5"), Decimal(1)]),
        pet_multiplier=MULTIPLIERS,
    )
    def earn_purchase(
        self,
        step: timedelta,
        amount: Decimal,
        multiplier: Decimal,
        late: timedelta,
        pet_share: Decimal = Decimal(0),
        pet_multiplier: Decimal = Decimal(1),
    ) -> None:
        self.now += step
        # An offline till may report late, but never before enrolment.
        occurred_at = max(self.now - late, self.account.enrolled_at)
        tx = self._id("earn")
        debt = self.account.debt
        # Order lines: a share in the campaign's category, the rest in another.
        pet = (amount * pet_share).quantize(Decimal("0.01"))
        lines = (
            OrderLine("dog-food", 2, pet, "pet"),
            OrderLine("yarn", 1, amount - pet, "hobby"),
        )
        event = self.account.earn_purchase(
            Purchase(
                order_id=f"order-{tx}",
                amount=amount,
                currency="NOK",
                occurred_at=occurred_at,
                channel="store",
                lines=lines,
            ),
            self.config,
            transaction_id=tx,
            lot_id=f"lot-{tx}",
            now=self.now,
            bonuses=(
                EarnBonus("tier", "Gold", multiplier),
                EarnBonus("campaign", "Pets", pet_multiplier, frozenset({"pet"})),
            ),
        )
        self._check_earned(event, debt)
        rounding = self.config.rounding
        assert event.qualifying_points == rounding.apply(amount)
        # The purchase's exact value, rounded once; the breakdown adds up to it.
        exact = amount * multiplier + pet * (pet_multiplier - 1)
        assert event.points == max(0, rounding.apply(exact))
        assert sum(line.points for line in event.breakdown) == event.points
        self.originals[tx] = Original("earn", event.points, amount)

    @rule(step=STEPS, points=st.integers(1, 2000), qualifying=st.booleans())
    def earn_bonus(self, step: timedelta, points: int, qualifying: bool) -> None:
        self.now += step
        tx = self._id("bonus")
        debt = self.account.debt
        event = self.account.earn_bonus(
            points,
            "machine",
            self.config,
            qualifying=qualifying,
            transaction_id=tx,
            lot_id=f"lot-{tx}",
            occurred_at=self.now,
            now=self.now,
        )
        self._check_earned(event, debt)
        assert event.qualifying_points == (points if qualifying else 0)
        self.originals[tx] = Original("earn", points, None)

    def _check_earned(self, event: PointsEarned, debt_before: int) -> None:
        lot = self.account.lots[event.lot_id]
        if event.available_at is None:
            assert event.debt_paid == min(debt_before, event.points)
            assert not lot.pending
        else:
            assert event.available_at > self.now
            assert event.debt_paid == 0
            assert lot.pending
        assert self.account.debt == debt_before - event.debt_paid
        assert lot.remaining == event.points - event.debt_paid

    # -- spending ------------------------------------------------------------------------

    @rule(points=st.one_of(st.integers(1, 300), st.integers(1, 5000)))
    def redeem(self, points: int) -> None:
        available = self.account.available
        tx = self._id("redeem")
        try:
            event = self.account.redeem(points, transaction_id=tx, now=self.now)
        except InsufficientPointsError as exc:
            assert points > available
            assert exc.extra == {"available": available}
            return
        assert points <= available
        assert self.account.available == available - points
        self._check_soonest_expiry_first(event)
        self._redeemed(event)

    @precondition(lambda self: self.account.available > 0)
    @rule()
    def redeem_everything(self) -> None:
        tx = self._id("redeem")
        points = self.account.available
        event = self.account.redeem(points, transaction_id=tx, now=self.now)
        self._check_soonest_expiry_first(event)
        assert self.account.available == 0
        self._redeemed(event)

    def _redeemed(self, event: PointsRedeemed) -> None:
        self.originals[event.transaction_id] = Original(
            "redemption", event.points, None, taken={a.lot_id: a.points for a in event.allocations}
        )

    def _check_soonest_expiry_first(self, event: PointsRedeemed) -> None:
        assert sum(a.points for a in event.allocations) == event.points
        assert all(a.points > 0 for a in event.allocations)
        lots = self.account.lots
        keys = [
            (lots[a.lot_id].expires_at, lots[a.lot_id].earned_at, a.lot_id)
            for a in event.allocations
        ]
        assert keys == sorted(keys)
        # Every lot but the last one touched is emptied, and no spendable lot that expires
        # sooner than the last one touched is left with points.
        assert all(lots[a.lot_id].remaining == 0 for a in event.allocations[:-1])
        last = keys[-1]
        for lot in lots.values():
            if not lot.pending and lot.remaining > 0:
                assert (lot.expires_at, lot.earned_at, lot.lot_id) >= last

    @rule(points=st.one_of(st.integers(-400, -1), st.integers(1, 400)))
    def adjust(self, points: int) -> None:
        available, debt = self.account.available, self.account.debt
        tx = self._id("adjust")
        try:
            event = self.account.adjust(
                points, self.config, transaction_id=tx, lot_id=f"lot-{tx}", now=self.now
            )
        except InsufficientPointsError as exc:
            assert -points > available
            assert exc.extra == {"available": available}
            return
        paid = event.debt_paid
        assert self.account.available == available + points - paid
        assert self.account.debt == debt - paid
        self.other_transactions.append(tx)

    # -- debt and late purchases ------------------------------------------------------

    @rule(step=STEPS, amount=st.decimals(min_value=1, max_value=3000, places=2))
    def refund_spent_purchase(self, step: timedelta, amount: Decimal) -> None:
        """A purchase whose points are spent and then refunded: debt under that policy."""
        self.earn_purchase(step, amount, Decimal(1), timedelta(0))
        earn = max(tx for tx in self.originals if tx.startswith("earn-"))
        if self.account.available:
            self.redeem_everything()
        self._reverse_now(earn)

    @precondition(lambda self: self.account.debt > 0)
    @rule(amount=AMOUNTS, multiplier=MULTIPLIERS, back=st.integers(1, 10 * 24 * 60))
    def late_purchase_paying_debt(self, amount: Decimal, multiplier: Decimal, back: int) -> None:
        """An offline till reports a purchase made before the refund that made the debt."""
        last_reversal = max(
            at
            for event, at in self._stream()
            if isinstance(event, EarnReversed) and event.debt_recorded
        )
        late = self.now - (last_reversal - timedelta(minutes=back))
        self.earn_purchase(timedelta(0), amount, multiplier, late)

    def _reverse_now(self, original_id: str) -> None:
        tx = self._id("reversal")
        event = self.account.reverse(original_id, self.config, transaction_id=tx, now=self.now)
        original = self.originals[original_id]
        original.reversals.append(tx)
        original.reversed_points += event.points
        original.reversed_amount += getattr(event, "amount", None) or 0
        self.other_transactions.append(tx)

    # -- reversals -----------------------------------------------------------------------

    def _started(self) -> list[str]:
        return sorted(
            tx for tx, o in self.originals.items() if o.reversals and o.reversed_points < o.points
        )

    @precondition(lambda self: bool(self.originals))
    @rule(data=st.data(), how=st.sampled_from(["full", "points", "amount"]))
    def reverse(self, data: st.DataObject, how: str) -> None:
        original_id = data.draw(st.sampled_from(sorted(self.originals)), label="original")
        self._reverse(data, original_id, how)

    @precondition(lambda self: bool(self._started()))
    @rule(data=st.data(), how=st.sampled_from(["amount", "points", "full"]))
    def reverse_again(self, data: st.DataObject, how: str) -> None:
        """Mixed partial reversals (by points, then by amount) are where bookkeeping slips."""
        original_id = data.draw(st.sampled_from(self._started()), label="original")
        self._reverse(data, original_id, how)

    def _reverse(self, data: st.DataObject, original_id: str, how: str) -> None:
        original = self.originals[original_id]
        left_points = original.points - original.reversed_points
        left_amount = (
            original.amount - original.reversed_amount if original.amount is not None else None
        )
        points: int | None = None
        amount: Decimal | None = None
        expected: type[Exception] | None = None
        if how == "points":
            points = data.draw(st.integers(1, max(1, left_points + 3)), label="points")
            if left_points <= 0:
                expected = NotReversibleError
            elif points > left_points:
                expected = ReversalExceedsOriginalError
        elif how == "amount":
            top = (left_amount or Decimal(0)) + 5
            amount = data.draw(
                st.one_of(
                    st.decimals(min_value=Decimal("0.01"), max_value=top, places=2),
                    st.just(left_amount if left_amount else Decimal(1)),
                ),
                label="amount",
            )
            if original.kind == "redemption" or left_amount is None:
                expected = InvalidRequestError
            elif amount > left_amount:
                expected = ReversalExceedsOriginalError
        elif left_points <= 0 and not left_amount:
            expected = NotReversibleError

        before = self._snapshot()
        own = self.account.lots.get(f"lot-{original_id}")
        own_before = (own.remaining, own.pending) if own is not None else (0, False)
        tx = self._id("reversal")
        try:
            event = self.account.reverse(
                original_id,
                self.config,
                transaction_id=tx,
                now=self.now,
                points=points,
                amount=amount,
            )
        except (InvalidRequestError, NotReversibleError, ReversalExceedsOriginalError) as exc:
            assert type(exc) is expected, (type(exc), expected)
            assert self._snapshot() == before
            return
        assert expected is None, f"expected {expected}"
        self.other_transactions.append(tx)
        original.reversals.append(tx)
        original.reversed_points += event.points
        assert event.points >= 0
        assert original.reversed_points <= original.points
        if isinstance(event, EarnReversed):
            self._check_earn_reversed(event, original, points, amount, before, own_before)
        else:
            assert isinstance(event, RedemptionReversed)
            assert original.kind == "redemption"
            assert event.points == (points if points is not None else left_points)
            assert sum(a.points for a in event.allocations) == event.points
            # Points returned to a lot past its expiry expire as they come back, then.
            expired = self.events[self.events.index(event) + 1 :]
            assert all(isinstance(e, PointsExpired) and e.expired_at == self.now for e in expired)
            assert {e.lot_id for e in expired if isinstance(e, PointsExpired)} == {
                a.lot_id
                for a in event.allocations
                if self.account.lots[a.lot_id].expires_at <= self.now
            }
            gone = sum(e.points for e in expired if isinstance(e, PointsExpired))
            assert self.account.available == before[0] + event.points - gone
            # Points go back only to the lots they came from, never more than was taken.
            for allocation in event.allocations:
                assert allocation.points > 0
                original.returned[allocation.lot_id] = (
                    original.returned.get(allocation.lot_id, 0) + allocation.points
                )
                assert original.returned[allocation.lot_id] <= original.taken[allocation.lot_id]

    def _check_earn_reversed(
        self,
        event: EarnReversed,
        original: Original,
        points: int | None,
        amount: Decimal | None,
        before: tuple[int, int, int],
        own_before: tuple[int, bool],
    ) -> None:
        assert original.kind == "earn"
        available, pending, debt = before
        own_remaining, own_pending = own_before
        own_lot = f"lot-{event.original_transaction_id}"
        taken = sum(a.points for a in event.allocations)
        assert all(a.points > 0 for a in event.allocations)
        assert taken + event.debt_recorded + event.forgiven == event.points
        policy = self.config.return_policy
        if policy is ReturnPolicy.ONLY_PENDING:
            # Only points still pending in the earn's own lot come back; the rest is forgiven.
            assert taken == (min(event.points, own_remaining) if own_pending else 0)
            assert all(a.lot_id == own_lot for a in event.allocations)
        else:
            # The earn's own lot first, then any spendable points; the rest is forgiven or
            # owed as debt.
            spendable = own_remaining + available - (0 if own_pending else own_remaining)
            assert taken == min(event.points, spendable)
            if event.allocations and own_remaining:
                assert event.allocations[0] == Allocation(own_lot, min(event.points, own_remaining))
        rest = event.points - taken
        if policy is ReturnPolicy.DEBT:
            assert (event.debt_recorded, event.forgiven) == (rest, 0)
        else:
            assert (event.debt_recorded, event.forgiven) == (0, rest)
        assert self.account.available + self.account.pending == available + pending - taken
        assert self.account.debt == debt + event.debt_recorded
        if points is not None:
            assert event.points == points
        if amount is not None:
            assert event.amount == amount
        elif points is not None:
            assert event.amount is None
        else:  # a full reversal refunds whatever is left of the amount
            assert event.amount == (
                original.amount - original.reversed_amount if original.amount is not None else None
            )
        original.reversed_amount += event.amount or 0
        if original.amount is not None and original.reversed_amount == original.amount:
            # A purchase whose whole amount is refunded has all its points reversed.
            assert original.reversed_points == original.points

    @precondition(lambda self: bool(self.other_transactions))
    @rule(data=st.data())
    def reverse_other_transaction(self, data: st.DataObject) -> None:
        tx = data.draw(st.sampled_from(self.other_transactions), label="transaction")
        before = self._snapshot()
        try:
            self.account.reverse(tx, self.config, transaction_id=self._id("reversal"), now=self.now)
        except NotReversibleError:
            assert self._snapshot() == before
        else:
            raise AssertionError("reversed an adjustment or a reversal")

    def _snapshot(self) -> tuple[int, int, int]:
        return self.account.available, self.account.pending, self.account.debt

    # -- the clock -----------------------------------------------------------------------

    @rule(step=STEPS)
    def advance(self, step: timedelta) -> None:
        self.now += step
        self._advance(self.now)

    @rule()
    def advance_to_next_due(self) -> None:
        """Jump exactly onto the next activation, expiry or period end."""
        due = [self.account.next_period_end(self.config)]
        for lot in self.account.lots.values():
            if lot.pending and lot.available_at is not None:
                due.append(lot.available_at)
            if lot.remaining > 0:
                due.append(lot.expires_at)
        upcoming = [at for at in due if at >= self.now]
        self.now = min(upcoming) if upcoming else self.now
        self._advance(self.now)

    def _advance(self, as_of: datetime) -> None:
        account, config = self.account, self.config
        debt = account.debt
        balance = account.balance(as_of, config)
        start = len(self.events)
        produced = account.advance_to(as_of, config)
        assert produced == self.events[start:]
        # The balance view is the same computation, applied to a copy beforehand.
        assert (balance.available, balance.pending, balance.debt) == (
            account.available,
            account.pending,
            account.debt,
        )
        assert account.advance_to(as_of, config) == []

        for lot in account.lots.values():
            assert not (lot.pending and lot.available_at is not None and lot.available_at <= as_of)
            assert not (lot.remaining > 0 and lot.expires_at <= as_of)
        expired = [e.lot_id for e in produced if isinstance(e, PointsExpired)]
        assert len(expired) == len(set(expired))
        times = [self._at(e) for e in produced]
        assert times == sorted(times)
        assert all(at <= as_of for at in times)
        for index, event in enumerate(produced, start):
            if isinstance(event, PointsExpired):
                assert event.points > 0
            if isinstance(event, PendingPointsActivated):
                # Activated points pay off debt before they become spendable.
                assert event.points >= 0
                assert event.debt_paid == min(debt, event.points)
                debt -= event.debt_paid
            if isinstance(event, QualificationPeriodEnded):
                self._check_period(event, self.events[:index])
        assert account.next_period_end(config) > as_of

    @staticmethod
    def _at(event: Event) -> datetime:
        if isinstance(event, PointsExpired):
            return event.expired_at
        if isinstance(event, PendingPointsActivated):
            return event.activated_at
        assert isinstance(event, QualificationPeriodEnded)
        return event.period_end

    def _check_period(self, event: QualificationPeriodEnded, earlier: list[Event]) -> None:
        assert event.period_start < event.period_end
        previous = [e for e in earlier if isinstance(e, QualificationPeriodEnded)]
        if previous:
            assert event.period_end > previous[-1].period_end
        else:
            # The first period is the one the member enrolled in.
            assert event.period_start <= self.account.enrolled_at < event.period_end
        # Its total, from the recorded facts alone: earns in the period, less reversals.
        earned_in: dict[str, int] = {}
        total = 0
        for e in earlier:
            if isinstance(e, PointsEarned):
                inside = event.period_start <= e.earned_at < event.period_end
                earned_in[e.transaction_id] = int(inside)
                total += e.qualifying_points * inside
            elif isinstance(e, EarnReversed):
                total -= e.qualifying_points * earned_in[e.original_transaction_id]
        assert event.qualifying_points == total

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def balances_match_the_lots(self) -> None:
        account = self.account
        lots = account.lots.values()
        assert account.available == sum(lot.remaining for lot in lots if not lot.pending)
        assert account.pending == sum(lot.remaining for lot in lots if lot.pending)
        assert account.available >= 0
        assert account.pending >= 0
        assert account.debt >= 0
        for lot in lots:
            assert 0 <= lot.remaining <= lot.original
        if self.config.return_policy is not ReturnPolicy.DEBT:
            assert account.debt == 0

    @invariant()
    def lifetime_and_qualifying_follow_the_events(self) -> None:
        earned = [e for e in self.events if isinstance(e, PointsEarned)]
        reversed_ = [e for e in self.events if isinstance(e, EarnReversed)]
        assert self.account.lifetime_earned == (
            sum(e.points for e in earned) - sum(e.points for e in reversed_)
        )
        assert sum(self.account.qualifying.values()) == (
            sum(e.qualifying_points for e in earned) - sum(e.qualifying_points for e in reversed_)
        )
        assert all(points >= 0 for points in self.account.qualifying.values())

    @invariant()
    def debt_is_what_was_recorded_less_what_was_paid(self) -> None:
        recorded = sum(e.debt_recorded for e in self.events if isinstance(e, EarnReversed))
        paid = sum(
            e.debt_paid
            for e in self.events
            if isinstance(e, PointsEarned | PendingPointsActivated | PointsAdjusted)
        )
        assert self.account.debt == recorded - paid

    @invariant()
    def folding_the_events_reproduces_the_account(self) -> None:
        live = self.account
        folded = MemberAccount.from_events(list(self.events))
        assert folded.version == live.version == len(self.events)
        assert folded.available == live.available
        assert folded.pending == live.pending
        assert folded.debt == live.debt
        assert folded.lifetime_earned == live.lifetime_earned
        assert folded.qualifying == live.qualifying
        assert folded.periods_closed_until == live.periods_closed_until
        assert folded.lots == live.lots
        assert folded.transactions == live.transactions

    # -- history (ADR 0018) --------------------------------------------------------------

    def _stream(self) -> list[tuple[Event, datetime]]:
        """The events with the times they were recorded: a step records at its own now."""
        self.recorded += [self.now] * (len(self.events) - len(self.recorded))
        return list(zip(self.events, self.recorded, strict=True))

    @invariant()
    def history_is_never_negative_and_ends_at_the_balance(self) -> None:
        stream = self._stream()
        history = History()
        for event, recorded_at in stream:
            history.record(event, recorded_at)
        times = sorted(set(history.effective_times()))
        for at in times:
            balance = history.balance(at, self.config)
            assert balance.available >= 0, at
            assert balance.pending >= 0, at
            assert balance.debt >= 0, at
            assert balance.lifetime_earned >= 0, at
            assert balance.qualifying_points >= 0, at
            assert all(points > 0 for _, points in balance.expiring)
        # An effect never precedes the member's enrolment, nor lies beyond what was known.
        assert all(self.account.enrolled_at <= at <= self.now for at in times)
        end = max([self.now, *times])
        past = historic_balance(stream, end, self.config)
        assert past == copy.deepcopy(self.account).balance(end, self.config)

    @invariant()
    def history_known_then_is_what_the_account_showed(self) -> None:
        """A past balance read with ``known_at`` = a step's time is the balance the account
        showed at that step (books once closed stay reproducible)."""
        stream = self._stream()
        shown = copy.deepcopy(self.account).balance(self.now, self.config)
        self.shown.append((self.now, len(stream), shown))
        for at, known, balance in self.shown:
            assert historic_balance(stream[:known], at, self.config) == balance, at


AccountMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAccountMachine = AccountMachine.TestCase
