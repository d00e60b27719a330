"""A member's history (ADR 0018): effects never precede their causes, a past balance is
never negative, and books read with ``known_at`` stay as they were."""

from __future__ import annotations

from datetime import datetime, timedelta

from ledger.domain.account import MemberAccount
from ledger.domain.events import (
    Allocation,
    Event,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    RedemptionReversed,
)
from ledger.domain.history import History, historic_balance
from ledger.domain.program import ProgramConfig
from loyalty_common.calendar import LifetimeKind, PointLifetime

from tests.unit.support import config, earn, enrol, utc

SHORT = config(point_lifetime=PointLifetime(LifetimeKind.ROLLING_MONTHS, months=3))


class Recorder:
    """A member's account with the time each of its events was recorded."""

    def __init__(self, cfg: ProgramConfig, at: datetime) -> None:
        self.cfg = cfg
        self.account = enrol(at)
        self.now = at
        self.recorded: list[datetime] = []

    def at(self, now: datetime) -> MemberAccount:
        """The account, to record at ``now`` (the clock run first, as every command does)."""
        self.stream()
        self.now = now
        self.account.advance_to(now, self.cfg)
        return self.account

    def stream(self) -> list[tuple[Event, datetime]]:
        """The events so far, those not yet stamped recorded at the current ``now``."""
        events = self.account.new_events
        self.recorded += [self.now] * (len(events) - len(self.recorded))
        return list(zip(events, self.recorded, strict=True))


def returned_after_expiry() -> tuple[Recorder, datetime, datetime]:
    """100 points earned, 60 redeemed, the lot expires, the redemption is reversed."""
    member = Recorder(SHORT, utc(2024, 1, 10, 12))
    earned = earn(member.at(utc(2024, 1, 11, 12)), SHORT, 100, utc(2024, 1, 11, 12), "t-1")
    member.at(utc(2024, 1, 12, 12)).redeem(60, transaction_id="t-2", now=utc(2024, 1, 12, 12))
    reversal = earned.expires_at + timedelta(days=5)
    member.at(reversal).reverse("t-2", SHORT, transaction_id="t-3", now=reversal)
    return member, earned.expires_at, reversal


def test_points_returned_to_an_expired_lot_expire_at_the_return() -> None:
    member, expired_at, reversal = returned_after_expiry()
    expiries = [e for e in member.account.new_events if isinstance(e, PointsExpired)]
    assert [(e.points, e.expired_at) for e in expiries] == [(40, expired_at), (60, reversal)]
    # The next clock run finds nothing more to expire: the lot never expires more than
    # it received.
    assert member.at(reversal + timedelta(days=30)).advance_to(reversal, SHORT) == []
    assert sum(e.points for e in expiries) == 100 - 60 + 60
    assert member.account.available == 0


def test_a_past_balance_between_an_expiry_and_a_late_return_is_not_negative() -> None:
    member, expired_at, reversal = returned_after_expiry()
    stream = member.stream()
    between = historic_balance(stream, expired_at + timedelta(days=1), SHORT)
    assert (between.available, between.pending, between.debt) == (0, 0, 0)
    after = historic_balance(stream, reversal + timedelta(days=1), SHORT)
    assert after.available == 0


def test_a_backdated_expiry_of_returned_points_takes_effect_at_the_return() -> None:
    """Streams recorded before returns expired at once hold one expiry of the whole lot,
    dated at the lot's expiry, recorded after the return: its returned part takes effect
    at the return."""
    member = Recorder(SHORT, utc(2024, 1, 10, 12))
    earned = earn(member.at(utc(2024, 1, 11, 12)), SHORT, 100, utc(2024, 1, 11, 12), "t-1")
    expires_at, returned_at = earned.expires_at, earned.expires_at + timedelta(days=5)
    lot = earned.lot_id
    stream: list[tuple[Event, datetime]] = [
        *member.stream(),
        (PointsRedeemed("t-2", 60, (Allocation(lot, 60),), utc(2024, 1, 12)), utc(2024, 1, 12)),
        (RedemptionReversed("t-3", "t-2", 60, (Allocation(lot, 60),), returned_at), returned_at),
        (PointsExpired(lot, 100, expires_at), returned_at + timedelta(days=1)),
    ]
    history = History()
    for event, recorded_at in stream:
        history.record(event, recorded_at)
    for at in sorted(set(history.effective_times())):
        assert history.balance(at, SHORT).available >= 0
    assert history.balance(expires_at, SHORT).available == 0
    assert history.balance(returned_at, SHORT).available == 0


def test_a_late_purchase_pays_debt_no_earlier_than_the_refund_that_made_it() -> None:
    member = Recorder(config(), utc(2024, 1, 10, 12))
    cfg = member.cfg
    earn(member.at(utc(2024, 2, 1, 12)), cfg, 100, utc(2024, 2, 1, 12), "t-1")
    member.at(utc(2024, 2, 2, 12)).redeem(100, transaction_id="t-2", now=utc(2024, 2, 2, 12))
    refund = utc(2024, 2, 10, 12)
    member.at(refund).reverse("t-1", cfg, transaction_id="t-3", now=refund)
    assert member.account.debt == 100
    # An offline till reports a purchase of 5 February on 12 February.
    late = earn(member.at(utc(2024, 2, 12, 12)), cfg, 80, utc(2024, 2, 5, 12), "t-4")
    assert late.debt_paid == 80
    stream = member.stream()
    before_refund = historic_balance(stream, utc(2024, 2, 7), cfg)
    assert (before_refund.available, before_refund.debt) == (80, 0)
    after_refund = historic_balance(stream, utc(2024, 2, 11), cfg)
    assert (after_refund.available, after_refund.debt) == (0, 20)
    assert historic_balance(stream, utc(2024, 2, 13), cfg).debt == 20


def test_known_at_reads_the_books_as_the_ledger_kept_them_then() -> None:
    member = Recorder(config(), utc(2024, 1, 10, 12))
    cfg = member.cfg
    earn(member.at(utc(2024, 1, 20, 12)), cfg, 100, utc(2024, 1, 20, 12), "t-1")
    closing = utc(2024, 2, 1)
    # A purchase of 25 January, reported after the month was closed.
    earn(member.at(utc(2024, 2, 3, 12)), cfg, 50, utc(2024, 1, 25, 12), "t-2")
    stream = member.stream()
    known_then = [(e, at) for e, at in stream if at <= closing]
    assert historic_balance(known_then, utc(2024, 1, 31), cfg).available == 100
    assert historic_balance(stream, utc(2024, 1, 31), cfg).available == 150


def test_no_effect_precedes_the_enrolment() -> None:
    member = Recorder(config(), utc(2024, 3, 1, 12))
    earned = earn(member.at(utc(2024, 3, 1, 13)), member.cfg, 70, utc(2024, 2, 20, 12), "t-1")
    assert isinstance(earned, PointsEarned)
    stream = member.stream()
    assert historic_balance(stream, utc(2024, 2, 25), member.cfg).available == 0
    assert historic_balance(stream, utc(2024, 3, 1, 12), member.cfg).available == 70
