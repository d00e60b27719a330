"""Earn reversals (refunds): return policies, partial reversals by points and by amount."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from ledger.domain.account import MemberAccount
from ledger.domain.errors import (
    InvalidRequestError,
    NotReversibleError,
    ReversalExceedsOriginalError,
)
from ledger.domain.events import Allocation, EarnReversed
from ledger.domain.program import ProgramConfig, ReturnPolicy

from tests.unit.support import bonus, config, earn, enrol, remaining, utc

AT = utc(2024, 3, 1, 12)
LATER = AT + timedelta(days=1)


def _reverse(
    account: MemberAccount, cfg: ProgramConfig, original: str, tx: str, **kwargs: Any
) -> EarnReversed:
    event = account.reverse(original, cfg, transaction_id=tx, now=LATER, **kwargs)
    assert isinstance(event, EarnReversed)
    taken = sum(a.points for a in event.allocations)
    assert taken + event.debt_recorded + event.forgiven == event.points
    return event


def _spent_down(policy: ReturnPolicy) -> tuple[MemberAccount, ProgramConfig]:
    """Earn A=100 and B=50, spend 120 (A 100, B 20): 30 left, all in lot B."""
    cfg = config(return_policy=policy)
    account = enrol()
    earn(account, cfg, "100", AT, "A")
    earn(account, cfg, "50", AT + timedelta(hours=1), "B")
    account.redeem(120, transaction_id="r1", now=LATER)
    assert remaining(account) == {"lot-A": 0, "lot-B": 30}
    return account, cfg


# -- only_pending --------------------------------------------------------------------


def test_only_pending_takes_back_pending_points() -> None:
    cfg = config(return_policy=ReturnPolicy.ONLY_PENDING, pending_days=14)
    account = enrol()
    earn(account, cfg, "100", AT, "A")
    event = _reverse(account, cfg, "A", "x1", points=30)
    assert event.allocations == (Allocation("lot-A", 30),)
    assert (event.forgiven, event.debt_recorded) == (0, 0)
    assert (account.available, account.pending, account.debt) == (0, 70, 0)
    assert account.lifetime_earned == 70
    assert account.qualifying == {"2024-03": 70}
    assert account.lots["lot-A"].pending


def test_only_pending_forgives_points_already_available() -> None:
    cfg = config(return_policy=ReturnPolicy.ONLY_PENDING, pending_days=14)
    account = enrol()
    earn(account, cfg, "100", AT, "A")
    _reverse(account, cfg, "A", "x1", points=30)
    account.advance_to(AT + timedelta(days=14), cfg)
    assert (account.available, account.pending) == (70, 0)

    event = _reverse(account, cfg, "A", "x2")
    assert event.points == 70
    assert event.allocations == ()
    assert (event.forgiven, event.debt_recorded) == (70, 0)
    assert (account.available, account.pending, account.debt) == (70, 0, 0)
    assert account.lifetime_earned == 0
    assert account.qualifying.get("2024-03", 0) == 0


def test_only_pending_never_touches_other_lots() -> None:
    account, cfg = _spent_down(ReturnPolicy.ONLY_PENDING)
    event = _reverse(account, cfg, "A", "x1")
    assert event.allocations == ()
    assert (event.forgiven, event.debt_recorded) == (100, 0)
    assert (account.available, account.debt) == (30, 0)
    assert account.lifetime_earned == 50


# -- within_balance ------------------------------------------------------------------


def test_within_balance_takes_what_is_available_and_forgives_the_rest() -> None:
    account, cfg = _spent_down(ReturnPolicy.WITHIN_BALANCE)
    event = _reverse(account, cfg, "A", "x1")
    assert event.allocations == (Allocation("lot-B", 30),)
    assert (event.forgiven, event.debt_recorded) == (70, 0)
    assert (account.available, account.debt) == (0, 0)
    assert account.lifetime_earned == 50
    assert account.qualifying == {"2024-03": 50}


def test_within_balance_takes_from_the_original_lot_first() -> None:
    cfg = config(return_policy=ReturnPolicy.WITHIN_BALANCE)
    account = enrol()
    earn(account, cfg, "100", AT, "A")
    earn(account, cfg, "100", AT + timedelta(days=1), "B")
    account.redeem(60, transaction_id="r1", now=LATER)
    event = _reverse(account, cfg, "A", "x1")
    assert event.allocations == (Allocation("lot-A", 40), Allocation("lot-B", 60))
    assert event.forgiven == 0
    assert remaining(account) == {"lot-A": 0, "lot-B": 40}
    assert account.available == 40


def test_within_balance_takes_back_pending_points_of_the_original() -> None:
    cfg = config(return_policy=ReturnPolicy.WITHIN_BALANCE, pending_days=14)
    account = enrol()
    earn(account, cfg, "100", AT, "A")
    event = _reverse(account, cfg, "A", "x1")
    assert event.allocations == (Allocation("lot-A", 100),)
    assert (account.available, account.pending) == (0, 0)


# -- debt ------------------------------------------------------------------------------


def test_debt_records_the_shortfall_and_the_next_earns_pay_it_off() -> None:
    account, cfg = _spent_down(ReturnPolicy.DEBT)
    event = _reverse(account, cfg, "A", "x1")
    assert event.allocations == (Allocation("lot-B", 30),)
    assert (event.forgiven, event.debt_recorded) == (0, 70)
    assert (account.available, account.debt) == (0, 70)

    paid = earn(account, cfg, "50", LATER, "C")
    assert paid.debt_paid == 50
    assert (account.available, account.debt) == (0, 20)
    paid = earn(account, cfg, "100", LATER, "D")
    assert paid.debt_paid == 20
    assert (account.available, account.debt) == (80, 0)
    assert remaining(account) == {"lot-A": 0, "lot-B": 0, "lot-C": 0, "lot-D": 80}
    assert account.lifetime_earned == 200


def test_reversing_an_earn_that_paid_debt_records_the_debt_again() -> None:
    account, cfg = _spent_down(ReturnPolicy.DEBT)
    _reverse(account, cfg, "A", "x1")
    earn(account, cfg, "100", LATER, "C")  # pays 70, 30 left
    event = _reverse(account, cfg, "C", "x2")
    assert event.allocations == (Allocation("lot-C", 30),)
    assert event.debt_recorded == 70
    assert (account.available, account.debt) == (0, 70)


def test_debt_policy_without_a_shortfall_records_no_debt() -> None:
    cfg = config(return_policy=ReturnPolicy.DEBT)
    account = enrol()
    earn(account, cfg, "100", AT, "A")
    event = _reverse(account, cfg, "A", "x1", points=40)
    assert event.allocations == (Allocation("lot-A", 40),)
    assert (event.debt_recorded, event.forgiven) == (0, 0)
    assert (account.available, account.debt) == (60, 0)


# -- by points -------------------------------------------------------------------------


def test_partial_reversals_by_points_never_exceed_the_original() -> None:
    cfg = config()
    account = enrol()
    earn(account, cfg, "100", AT, "A")
    _reverse(account, cfg, "A", "x1", points=60)
    with pytest.raises(ReversalExceedsOriginalError) as caught:
        _reverse(account, cfg, "A", "x2", points=41)
    assert caught.value.extra == {"field": "points", "reversible_points": 40}
    _reverse(account, cfg, "A", "x2", points=40)
    assert account.transactions["A"].reversed_points == 100
    assert account.available == 0
    with pytest.raises(NotReversibleError):
        _reverse(account, cfg, "A", "x3", points=1)


def test_full_reversal_after_all_points_went_back_only_closes_the_amount() -> None:
    cfg = config()
    account = enrol()
    earn(account, cfg, "100", AT, "A")
    _reverse(account, cfg, "A", "x1", points=100)
    # The points are all back, but the purchase amount was never refunded: a full
    # reversal records the amount with no points, and only then is the earn closed.
    event = _reverse(account, cfg, "A", "x2")
    assert (event.points, event.amount, event.allocations) == (0, Decimal(100), ())
    assert account.lifetime_earned == 0
    with pytest.raises(NotReversibleError):
        _reverse(account, cfg, "A", "x3")


def test_bonus_fully_reversed_by_points_is_closed() -> None:
    cfg = config()
    account = enrol()
    bonus(account, cfg, 10, AT, "A")
    _reverse(account, cfg, "A", "x1", points=10)
    with pytest.raises(NotReversibleError):
        _reverse(account, cfg, "A", "x2")


def test_partial_reversal_reduces_qualifying_points_proportionally() -> None:
    cfg = config()
    account = enrol()
    earn(account, cfg, "100", AT, "A", multiplier=Decimal(3))  # 300 points, 100 qualifying
    event = _reverse(account, cfg, "A", "x1", points=100)
    assert event.qualifying_points == 33
    assert event.qualifying_month == "2024-03"
    event = _reverse(account, cfg, "A", "x2", points=100)
    assert event.qualifying_points == 33  # 200 of 300 -> 66 in all
    event = _reverse(account, cfg, "A", "x3")
    assert (event.points, event.qualifying_points) == (100, 34)
    assert account.qualifying == {"2024-03": 0}


def test_a_bonus_earn_is_reversed_by_points() -> None:
    cfg = config()
    account = enrol()
    bonus(account, cfg, 80, AT, "A")
    with pytest.raises(InvalidRequestError):
        _reverse(account, cfg, "A", "x1", amount=Decimal(1))
    event = _reverse(account, cfg, "A", "x1")
    assert (event.points, event.amount) == (80, None)
    assert account.available == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"points": 0},
        {"points": -1},
        {"amount": Decimal(0)},
        {"amount": Decimal(-1)},
        {"points": 1, "amount": Decimal(1)},
    ],
)
def test_malformed_reversals_are_refused(kwargs: dict[str, object]) -> None:
    cfg = config()
    account = enrol()
    earn(account, cfg, "100", AT, "A")
    with pytest.raises(InvalidRequestError):
        _reverse(account, cfg, "A", "x1", **kwargs)
    assert account.available == 100


# -- by amount -------------------------------------------------------------------------


def test_reversal_by_amount_is_proportional() -> None:
    cfg = config()
    account = enrol()
    earn(account, cfg, "100", AT, "A", multiplier=Decimal(2))  # 200 points, 100 qualifying
    event = _reverse(account, cfg, "A", "x1", amount=Decimal("30"))
    assert (event.points, event.qualifying_points, event.amount) == (60, 30, Decimal(30))
    event = _reverse(account, cfg, "A", "x2", amount=Decimal("33.33"))
    # 63.33 of 100 NOK -> 126.66 -> 126 points in all
    assert (event.points, event.qualifying_points) == (66, 33)
    event = _reverse(account, cfg, "A", "x3", amount=Decimal("36.67"))
    assert (event.points, event.qualifying_points) == (74, 37)
    assert account.transactions["A"].reversed_points == 200
    assert account.transactions["A"].reversed_amount == Decimal(100)
    assert account.available == 0
    assert account.lifetime_earned == 0
    assert account.qualifying == {"2024-03": 0}


def test_partial_reversals_by_amount_sum_to_the_original_points() -> None:
    cfg = config()
    account = enrol()
    earn(account, cfg, "250", AT, "A")
    parts = [Decimal("83.33"), Decimal("83.33"), Decimal("83.33"), Decimal("0.01")]
    points = [
        _reverse(account, cfg, "A", f"x{i}", amount=part).points for i, part in enumerate(parts)
    ]
    assert points == [83, 83, 83, 1]
    assert sum(points) == 250
    assert account.available == 0

    with pytest.raises(ReversalExceedsOriginalError) as caught:
        _reverse(account, cfg, "A", "x9", amount=Decimal("0.01"))
    assert caught.value.extra == {"field": "amount", "reversible_amount": "0.00"}
    with pytest.raises(NotReversibleError):
        _reverse(account, cfg, "A", "x9")


def test_reversal_by_amount_cannot_exceed_what_is_left() -> None:
    cfg = config()
    account = enrol()
    earn(account, cfg, "250", AT, "A")
    _reverse(account, cfg, "A", "x1", amount=Decimal("50"))
    with pytest.raises(ReversalExceedsOriginalError) as caught:
        _reverse(account, cfg, "A", "x2", amount=Decimal("200.01"))
    assert caught.value.extra == {"field": "amount", "reversible_amount": "200"}
    assert account.available == 200


def test_full_reversal_after_partial_amounts_takes_the_rest() -> None:
    cfg = config()
    account = enrol()
    earn(account, cfg, "99.99", AT, "A")  # 99 points
    first = _reverse(account, cfg, "A", "x1", amount=Decimal("10"))
    assert first.points == 9  # 99 x 10 / 99.99 = 9.9009...
    rest = _reverse(account, cfg, "A", "x2")
    assert (rest.points, rest.amount) == (90, Decimal("89.99"))
    assert account.transactions["A"].reversed_amount == Decimal("99.99")


def test_amount_reversal_after_points_reversal_never_gives_points_back() -> None:
    cfg = config()
    account = enrol()
    earn(account, cfg, "100", AT, "A")
    _reverse(account, cfg, "A", "x1", points=90)
    # 50 NOK is worth 50 points, already covered by the 90 reversed.
    event = _reverse(account, cfg, "A", "x2", amount=Decimal(50))
    assert (event.points, event.allocations) == (0, ())
    assert account.available == 10
    assert account.lifetime_earned == 10
    event = _reverse(account, cfg, "A", "x3", amount=Decimal(50))
    assert event.points == 10
    assert account.available == 0
    assert account.lifetime_earned == 0
