"""Time-driven facts: expiry, qualification periods, lifetimes and the balance view."""

from __future__ import annotations

from datetime import datetime, timedelta

from ledger.domain.account import MemberAccount
from ledger.domain.events import (
    Event,
    PendingPointsActivated,
    PointsExpired,
    QualificationPeriodEnded,
)
from ledger.domain.program import (
    ReturnPolicy,
)
from loyalty_common.calendar import (
    LifetimeKind,
    PointLifetime,
    QualificationKind,
    add_months,
    expiry_for,
    period_containing,
)

from tests.unit.support import OSLO, bonus, config, earn, enrol, remaining, utc

END_OF_YEAR_1 = PointLifetime(LifetimeKind.END_OF_YEAR, years=1)
END_OF_YEAR_2 = PointLifetime(LifetimeKind.END_OF_YEAR, years=2)


def _of(events: list[Event], kind: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


def _periods(events: list[Event]) -> list[tuple[datetime, datetime, int]]:
    return [
        (e.period_start, e.period_end, e.qualifying_points)
        for e in events
        if isinstance(e, QualificationPeriodEnded)
    ]


# -- expiry ----------------------------------------------------------------------------


def test_expiry_emits_one_event_per_lot_with_points_left_and_is_idempotent() -> None:
    cfg = config()
    account = enrol(utc(2024, 2, 1))
    earn(account, cfg, "100", utc(2024, 3, 1, 12), "A")  # expires 2026-03-01 12:00 UTC
    earn(account, cfg, "100", utc(2024, 3, 10, 12), "B")  # expires 2026-03-10 12:00 UTC
    earn(account, cfg, "50", utc(2024, 4, 1, 12), "C")  # expires 2026-04-01 12:00 UTC
    earn(account, cfg, "30", utc(2024, 4, 2, 12), "D")  # expires 2026-04-02 12:00 UTC
    account.redeem(120, transaction_id="r1", now=utc(2024, 5, 1))
    assert remaining(account) == {"lot-A": 0, "lot-B": 80, "lot-C": 50, "lot-D": 30}

    events = account.advance_to(utc(2026, 3, 20), cfg)
    assert _of(events, PointsExpired) == [
        PointsExpired(lot_id="lot-B", points=80, expired_at=utc(2026, 3, 10, 12))
    ]
    assert account.available == 80
    assert account.advance_to(utc(2026, 3, 20), cfg) == []

    # Expiry is due at the expiry instant itself, and each lot expires on its own.
    assert account.advance_to(utc(2026, 4, 1, 11, 59), cfg) == []
    events = account.advance_to(utc(2026, 4, 3), cfg)
    assert events == [
        PointsExpired(lot_id="lot-C", points=50, expired_at=utc(2026, 4, 1, 12)),
        PointsExpired(lot_id="lot-D", points=30, expired_at=utc(2026, 4, 2, 12)),
    ]
    assert account.advance_to(utc(2026, 4, 3), cfg) == []
    assert (account.available, account.pending) == (0, 0)
    assert remaining(account) == {"lot-A": 0, "lot-B": 0, "lot-C": 0, "lot-D": 0}
    # Expiry is not a reversal: lifetime earned stays.
    assert account.lifetime_earned == 280


def test_expiry_at_exactly_as_of_is_processed() -> None:
    cfg = config()
    account = enrol(utc(2024, 2, 1))
    earn(account, cfg, "100", utc(2024, 3, 1, 12), "A")
    events = account.advance_to(utc(2026, 3, 1, 12), cfg)
    assert _of(events, PointsExpired) == [
        PointsExpired(lot_id="lot-A", points=100, expired_at=utc(2026, 3, 1, 12))
    ]


def test_clock_orders_activation_before_expiry_and_pays_debt_on_activation() -> None:
    cfg = config(
        pending_days=14,
        return_policy=ReturnPolicy.DEBT,
        point_lifetime=PointLifetime(LifetimeKind.ROLLING_MONTHS, months=1),
    )
    account = enrol(utc(2024, 2, 1))
    at = utc(2024, 3, 1, 12)
    earn(account, cfg, "100", at, "A", now=at + timedelta(days=20))  # available at once
    account.redeem(100, transaction_id="r1", now=at + timedelta(days=20))
    account.reverse("A", cfg, transaction_id="x1", now=at + timedelta(days=20))
    assert account.debt == 100
    earn(account, cfg, "150", utc(2024, 3, 25, 12), "B")  # pending until 8 April
    events = account.advance_to(utc(2024, 5, 1), cfg)
    assert events == [
        PendingPointsActivated(
            lot_id="lot-B", points=150, activated_at=utc(2024, 4, 8, 12), debt_paid=100
        ),
        # 25 March 13:00 CET + 1 month = 25 April 13:00 CEST = 11:00 UTC
        PointsExpired(lot_id="lot-B", points=50, expired_at=utc(2024, 4, 25, 11)),
    ]
    assert (account.available, account.pending, account.debt) == (0, 0, 0)


# -- qualification periods -----------------------------------------------------------


def test_calendar_year_periods_follow_the_program_time_zone() -> None:
    cfg = config(qualification_kind=QualificationKind.CALENDAR_YEAR)
    account = enrol(utc(2024, 3, 10, 12))
    assert account.next_period_end(cfg) == utc(2024, 12, 31, 23)
    earn(account, cfg, "100", utc(2024, 3, 15), "A")
    earn(account, cfg, "10", utc(2024, 12, 31, 22, 59), "B")  # 23:59 in Oslo
    earn(account, cfg, "1000", utc(2024, 12, 31, 23, 30), "C")  # 2025 in Oslo
    bonus(account, cfg, 500, utc(2024, 6, 1), "D", qualifying=False)
    account.reverse("A", cfg, transaction_id="x1", now=utc(2024, 6, 2), points=40)

    assert account.advance_to(utc(2024, 12, 31, 22, 59, 59), cfg) == []
    events = account.advance_to(utc(2024, 12, 31, 23), cfg)
    assert _periods(events) == [(utc(2023, 12, 31, 23), utc(2024, 12, 31, 23), 70)]
    assert account.periods_closed_until == utc(2024, 12, 31, 23)
    assert account.next_period_end(cfg) == utc(2025, 12, 31, 23)

    earn(account, cfg, "200", utc(2025, 6, 1), "E")
    events = account.advance_to(utc(2027, 1, 5), cfg)
    assert _periods(events) == [
        (utc(2024, 12, 31, 23), utc(2025, 12, 31, 23), 1200),
        (utc(2025, 12, 31, 23), utc(2026, 12, 31, 23), 0),
    ]
    assert account.advance_to(utc(2027, 1, 5), cfg) == []


def test_rolling_12_month_periods_end_every_month_with_the_trailing_total() -> None:
    cfg = config(qualification_kind=QualificationKind.ROLLING_12_MONTHS)
    account = enrol(utc(2024, 3, 10, 12))
    # The first period to end is the one enrolment falls in: the twelve months to March.
    assert account.next_period_end(cfg) == utc(2024, 3, 31, 22)
    earn(account, cfg, "100", utc(2024, 3, 15), "A")
    earn(account, cfg, "50", utc(2024, 4, 20), "B")
    earn(account, cfg, "7", utc(2024, 5, 31, 22, 30), "C")  # June in Oslo

    events = account.advance_to(utc(2024, 6, 15), cfg)
    assert _periods(events) == [
        (utc(2023, 3, 31, 22), utc(2024, 3, 31, 22), 100),
        (utc(2023, 4, 30, 22), utc(2024, 4, 30, 22), 150),
        (utc(2023, 5, 31, 22), utc(2024, 5, 31, 22), 150),
    ]
    events = account.advance_to(utc(2025, 4, 15), cfg)
    ends = [end for _, end, _ in _periods(events)]
    assert ends == [
        utc(2024, 6, 30, 22),
        utc(2024, 7, 31, 22),
        utc(2024, 8, 31, 22),
        utc(2024, 9, 30, 22),
        utc(2024, 10, 31, 23),
        utc(2024, 11, 30, 23),
        utc(2024, 12, 31, 23),
        utc(2025, 1, 31, 23),
        utc(2025, 2, 28, 23),
        utc(2025, 3, 31, 22),
    ]
    assert [total for _, _, total in _periods(events)] == [157] * 9 + [57]
    assert account.advance_to(utc(2025, 4, 15), cfg) == []


def test_rolling_periods_never_end_before_enrolment() -> None:
    cfg = config(qualification_kind=QualificationKind.ROLLING_12_MONTHS)
    account = enrol(utc(2024, 3, 10, 12))
    events = account.advance_to(utc(2024, 3, 31, 21, 59), cfg)
    assert events == []


def test_anniversary_periods_start_on_the_first_of_the_enrolment_month() -> None:
    cfg = config(qualification_kind=QualificationKind.ANNIVERSARY)
    account = enrol(utc(2024, 3, 10, 12))
    assert account.qualification_period(utc(2024, 7, 1), cfg) == (
        utc(2024, 2, 29, 23),
        utc(2025, 2, 28, 23),
    )
    earn(account, cfg, "100", utc(2024, 3, 15), "A")
    earn(account, cfg, "20", utc(2025, 2, 28, 22, 30), "B")  # 23:30 on 28 February in Oslo
    earn(account, cfg, "300", utc(2025, 2, 28, 23, 30), "C")  # 1 March in Oslo

    events = account.advance_to(utc(2025, 2, 28, 23), cfg)
    assert _periods(events) == [(utc(2024, 2, 29, 23), utc(2025, 2, 28, 23), 120)]
    events = account.advance_to(utc(2026, 3, 1), cfg)
    assert _periods(events) == [(utc(2025, 2, 28, 23), utc(2026, 2, 28, 23), 300)]


def test_a_reversal_after_the_period_counts_against_the_original_month() -> None:
    cfg = config(qualification_kind=QualificationKind.CALENDAR_YEAR)
    account = enrol(utc(2024, 3, 10, 12))
    earn(account, cfg, "100", utc(2024, 12, 20), "A")
    account.reverse("A", cfg, transaction_id="x1", now=utc(2025, 1, 10), points=30)
    assert account.qualifying == {"2024-12": 70}
    events = account.advance_to(utc(2025, 1, 11), cfg)
    assert _periods(events) == [(utc(2023, 12, 31, 23), utc(2024, 12, 31, 23), 70)]


# -- lifetimes -----------------------------------------------------------------------


def test_end_of_year_one_year_expires_at_the_end_of_the_local_earning_year() -> None:
    assert expiry_for(utc(2024, 5, 5, 10), END_OF_YEAR_1, OSLO) == utc(2024, 12, 31, 23)
    assert expiry_for(utc(2024, 12, 31, 22, 59), END_OF_YEAR_1, OSLO) == utc(2024, 12, 31, 23)
    # 00:30 on 1 January 2025 in Oslo: earned in 2025.
    assert expiry_for(utc(2024, 12, 31, 23, 30), END_OF_YEAR_1, OSLO) == utc(2025, 12, 31, 23)


def test_end_of_year_two_years_expires_at_the_end_of_the_next_year() -> None:
    assert expiry_for(utc(2024, 1, 1), END_OF_YEAR_2, OSLO) == utc(2025, 12, 31, 23)
    assert expiry_for(utc(2024, 12, 31, 22, 59), END_OF_YEAR_2, OSLO) == utc(2025, 12, 31, 23)
    assert expiry_for(utc(2024, 12, 31, 23, 30), END_OF_YEAR_2, OSLO) == utc(2026, 12, 31, 23)


def test_end_of_year_lots_expire_together_before_the_period_closes() -> None:
    cfg = config(point_lifetime=END_OF_YEAR_1)
    account = enrol(utc(2024, 1, 10))
    earn(account, cfg, "100", utc(2024, 5, 5, 10), "B")
    earn(account, cfg, "40", utc(2024, 12, 31, 22, 59), "A")
    earn(account, cfg, "7", utc(2024, 12, 31, 23, 30), "C")
    assert account.lots["lot-A"].expires_at == utc(2024, 12, 31, 23)
    assert account.lots["lot-C"].expires_at == utc(2025, 12, 31, 23)

    events = account.advance_to(utc(2025, 1, 1), cfg)
    end = utc(2024, 12, 31, 23)
    assert events == [
        PointsExpired(lot_id="lot-A", points=40, expired_at=end),
        PointsExpired(lot_id="lot-B", points=100, expired_at=end),
        QualificationPeriodEnded(
            period_start=utc(2023, 12, 31, 23), period_end=end, qualifying_points=140
        ),
    ]
    assert account.available == 7


def test_rolling_months_keep_the_local_wall_clock_time_and_clamp_the_day() -> None:
    # 13:00 CET -> 13:00 CEST a month later: one hour earlier in UTC.
    assert add_months(utc(2024, 3, 15, 12), 1, OSLO) == utc(2024, 4, 15, 11)
    # 31 January + 1 month is the last day of February (a leap year).
    assert add_months(utc(2024, 1, 31, 12), 1, OSLO) == utc(2024, 2, 29, 12)
    assert add_months(utc(2024, 1, 31, 12), 13, OSLO) == utc(2025, 2, 28, 12)
    assert add_months(utc(2024, 11, 30, 12), 2, OSLO) == utc(2025, 1, 30, 12)
    lifetime = PointLifetime(LifetimeKind.ROLLING_MONTHS, months=24)
    assert expiry_for(utc(2024, 2, 29, 12), lifetime, OSLO) == utc(2026, 2, 28, 12)


def test_period_containing_for_each_kind() -> None:
    enrolled = utc(2024, 3, 10)
    at = utc(2024, 8, 15)
    assert period_containing(at, QualificationKind.CALENDAR_YEAR, enrolled, OSLO) == (
        utc(2023, 12, 31, 23),
        utc(2024, 12, 31, 23),
    )
    assert period_containing(at, QualificationKind.ROLLING_12_MONTHS, enrolled, OSLO) == (
        utc(2023, 8, 31, 22),
        utc(2024, 8, 31, 22),
    )
    assert period_containing(at, QualificationKind.ANNIVERSARY, enrolled, OSLO) == (
        utc(2024, 2, 29, 23),
        utc(2025, 2, 28, 23),
    )
    assert period_containing(utc(2025, 3, 1), QualificationKind.ANNIVERSARY, enrolled, OSLO) == (
        utc(2025, 2, 28, 23),
        utc(2026, 2, 28, 23),
    )


# -- balance view --------------------------------------------------------------------


def _balance_account() -> MemberAccount:
    cfg = config()
    account = enrol(utc(2023, 12, 1))
    earn(account, cfg, "5", utc(2023, 12, 20, 12), "L6")  # expires 2025-12-20
    earn(account, cfg, "10", utc(2024, 2, 10, 23, 30), "L1")  # 2026-02-11 00:30 in Oslo
    earn(account, cfg, "20", utc(2024, 2, 11, 10), "L2")  # 2026-02-11 11:00 in Oslo
    earn(account, cfg, "40", utc(2024, 3, 1, 12), "L3")  # 2026-03-01
    earn(account, cfg, "50", utc(2024, 4, 1), "L4")  # 2026-04-01 00:00 UTC, the horizon
    earn(account, cfg, "60", utc(2024, 4, 1, 0, 0, 1), "L5")  # just past the horizon
    account.redeem(10, transaction_id="r1", now=utc(2024, 5, 1))  # L6 5, L1 5
    return account


def test_balance_lists_points_expiring_within_90_days_by_local_date() -> None:
    cfg = config()
    account = _balance_account()
    events_before = list(account.new_events)
    balance = account.balance(utc(2026, 1, 1), cfg)
    assert balance.expiring == (("2026-02-11", 25), ("2026-03-01", 40), ("2026-04-01", 50))
    assert (balance.available, balance.pending, balance.debt) == (175, 0, 0)
    assert balance.lifetime_earned == 185
    assert (balance.qualification_period_start, balance.qualification_period_end) == (
        utc(2025, 12, 31, 23),
        utc(2026, 12, 31, 23),
    )
    assert balance.qualifying_points == 0
    # A view: the account itself is not advanced.
    assert account.new_events == events_before
    assert account.available == 175


def test_advanced_balance_is_the_balance_applied_to_the_account_itself() -> None:
    cfg = config(pending_days=14)
    account = _balance_account()
    earn(account, cfg, "100", utc(2025, 12, 25), "P")
    view = account.balance(utc(2026, 1, 10), cfg)  # the 100 became available on 8 January
    assert account.pending == 100  # the view left the account as it was
    assert account.advanced_balance(utc(2026, 1, 10), cfg) == view
    assert (account.available, account.pending) == (view.available, view.pending) == (275, 0)


def test_balance_counts_qualifying_points_of_the_current_period() -> None:
    cfg = config()
    account = _balance_account()
    balance = account.balance(utc(2024, 6, 1), cfg)
    assert balance.qualifying_points == 180
    assert balance.expiring == ()
    assert balance.available == 175


def test_balance_shows_pending_points_and_their_activation() -> None:
    cfg = config(pending_days=14)
    account = enrol(utc(2024, 1, 1))
    earn(account, cfg, "100", utc(2024, 3, 1, 12), "A")
    before = account.balance(utc(2024, 3, 15, 11), cfg)
    after = account.balance(utc(2024, 3, 15, 12), cfg)
    assert (before.available, before.pending) == (0, 100)
    assert (after.available, after.pending) == (100, 0)
    assert (account.available, account.pending) == (0, 100)


# -- folding -------------------------------------------------------------------------


def test_folding_the_recorded_events_reproduces_the_account() -> None:
    cfg = config(pending_days=14, return_policy=ReturnPolicy.DEBT)
    account = enrol(utc(2024, 1, 1))
    account.link_card("card-1")
    earn(account, cfg, "100", utc(2024, 1, 5), "A", now=utc(2024, 2, 1))
    earn(account, cfg, "80", utc(2024, 2, 1), "B")
    account.redeem(60, transaction_id="r1", now=utc(2024, 2, 2))
    account.reverse("r1", cfg, transaction_id="x1", now=utc(2024, 2, 3), points=20)
    account.reverse("A", cfg, transaction_id="x2", now=utc(2024, 2, 4))
    account.advance_to(utc(2025, 1, 2), cfg)
    account.adjust(15, cfg, transaction_id="adj", lot_id="lot-adj", now=utc(2025, 1, 3))

    folded = MemberAccount.from_events(account.new_events)
    for name in (
        "version",
        "available",
        "pending",
        "debt",
        "lifetime_earned",
        "qualifying",
        "periods_closed_until",
        "cards",
        "lots",
        "transactions",
    ):
        assert getattr(folded, name) == getattr(account, name), name
    assert folded.new_events == []
    # A took 60 of its own and recorded 40 debt, which B paid when it activated.
    assert (account.available, account.pending, account.debt) == (55, 0, 0)
    assert account.cards == {"card-1"}
