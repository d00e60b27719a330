"""Redemptions and their reversals: soonest-expiring lots first, returned to the same lots."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from ledger.domain.account import MemberAccount
from ledger.domain.errors import (
    InsufficientPointsError,
    InvalidRequestError,
    NotReversibleError,
    ReversalExceedsOriginalError,
)
from ledger.domain.events import Allocation, PointsExpired, RedemptionReversed
from ledger.domain.program import ProgramConfig

from tests.unit.support import config, earn, enrol, remaining, utc

EARLY = utc(2024, 3, 1, 12)  # expires 2026-03-01 12:00 UTC (13:00 in Oslo)
LATE = utc(2024, 3, 10, 12)
NOW = utc(2024, 3, 10, 13)


def _two_lots() -> tuple[MemberAccount, ProgramConfig]:
    """Lot B recorded first but earned later; lot A arrives late from an offline till."""
    cfg = config()
    account = enrol()
    earn(account, cfg, "100", LATE, "B")
    earn(account, cfg, "100", EARLY, "A", now=NOW)
    assert account.lots["lot-A"].expires_at < account.lots["lot-B"].expires_at
    return account, cfg


def test_redemption_consumes_the_soonest_expiring_lot_first() -> None:
    account, _ = _two_lots()
    event = account.redeem(150, transaction_id="r1", now=NOW, reward="coffee")
    assert event.allocations == (Allocation("lot-A", 100), Allocation("lot-B", 50))
    assert event.reward == "coffee"
    assert remaining(account) == {"lot-A": 0, "lot-B": 50}
    assert account.available == 50
    assert account.transactions["r1"].kind == "redemption"


def test_equal_expiry_breaks_ties_by_earned_at_then_lot_id() -> None:
    cfg = config()
    account = enrol()
    earn(account, cfg, "10", EARLY, "b")
    earn(account, cfg, "10", EARLY, "a")
    event = account.redeem(15, transaction_id="r1", now=NOW)
    assert event.allocations == (Allocation("lot-a", 10), Allocation("lot-b", 5))


def test_redeeming_more_than_available_is_refused_with_the_available_points() -> None:
    account, _ = _two_lots()
    account.redeem(150, transaction_id="r1", now=NOW)
    events_before = list(account.new_events)
    with pytest.raises(InsufficientPointsError) as caught:
        account.redeem(51, transaction_id="r2", now=NOW)
    assert caught.value.extra == {"available": 50}
    assert caught.value.code == "insufficient_points"
    assert account.new_events == events_before
    assert account.available == 50
    assert "r2" not in account.transactions


def test_redeeming_exactly_the_balance_succeeds() -> None:
    account, _ = _two_lots()
    account.redeem(200, transaction_id="r1", now=NOW)
    assert account.available == 0


def test_pending_lots_are_not_redeemed() -> None:
    cfg = config(pending_days=14)
    account = enrol()
    earn(account, cfg, "100", EARLY, "A", now=EARLY + timedelta(days=20))  # available
    earn(account, cfg, "500", NOW + timedelta(days=10), "P")  # pending
    with pytest.raises(InsufficientPointsError) as caught:
        account.redeem(101, transaction_id="r1", now=NOW)
    assert caught.value.extra == {"available": 100}
    event = account.redeem(100, transaction_id="r1", now=NOW)
    assert event.allocations == (Allocation("lot-A", 100),)
    assert account.pending == 500


@pytest.mark.parametrize("points", [0, -1])
def test_redemption_must_be_positive(points: int) -> None:
    account, _ = _two_lots()
    with pytest.raises(InvalidRequestError):
        account.redeem(points, transaction_id="r1", now=NOW)


def test_full_redemption_reversal_returns_points_to_the_same_lots() -> None:
    account, cfg = _two_lots()
    expiries = {lot_id: lot.expires_at for lot_id, lot in account.lots.items()}
    account.redeem(150, transaction_id="r1", now=NOW)
    event = account.reverse("r1", cfg, transaction_id="x1", now=NOW + timedelta(days=1))
    assert isinstance(event, RedemptionReversed)
    assert event.points == 150
    assert sorted(event.allocations, key=lambda a: a.lot_id) == [
        Allocation("lot-A", 100),
        Allocation("lot-B", 50),
    ]
    assert remaining(account) == {"lot-A": 100, "lot-B": 100}
    assert {lot_id: lot.expires_at for lot_id, lot in account.lots.items()} == expiries
    assert account.available == 200
    assert account.transactions["r1"].reversed_points == 150
    # Redemptions do not touch earned or qualifying points.
    assert account.lifetime_earned == 200


def test_partial_redemption_reversals_never_exceed_the_original() -> None:
    account, cfg = _two_lots()
    account.redeem(150, transaction_id="r1", now=NOW)

    first = account.reverse("r1", cfg, transaction_id="x1", now=NOW, points=70)
    # The latest-expiring lot gets its points back first.
    assert first.allocations == (Allocation("lot-B", 50), Allocation("lot-A", 20))
    assert remaining(account) == {"lot-A": 20, "lot-B": 100}

    with pytest.raises(ReversalExceedsOriginalError) as caught:
        account.reverse("r1", cfg, transaction_id="x2", now=NOW, points=81)
    assert caught.value.extra == {"field": "points", "reversible_points": 80}

    second = account.reverse("r1", cfg, transaction_id="x2", now=NOW, points=80)
    assert second.allocations == (Allocation("lot-A", 80),)
    assert remaining(account) == {"lot-A": 100, "lot-B": 100}
    assert account.available == 200

    with pytest.raises(NotReversibleError):
        account.reverse("r1", cfg, transaction_id="x3", now=NOW)
    with pytest.raises(NotReversibleError):
        account.reverse("r1", cfg, transaction_id="x3", now=NOW, points=1)


def test_a_redemption_cannot_be_reversed_by_amount() -> None:
    account, cfg = _two_lots()
    account.redeem(10, transaction_id="r1", now=NOW)
    with pytest.raises(InvalidRequestError):
        account.reverse("r1", cfg, transaction_id="x1", now=NOW, amount=Decimal(1))


def test_returned_points_keep_their_original_expiry() -> None:
    account, cfg = _two_lots()
    account.redeem(150, transaction_id="r1", now=NOW)
    expiry_a = account.lots["lot-A"].expires_at
    assert expiry_a == utc(2026, 3, 1, 12)

    # Lot A expires while empty: nothing to expire.
    clock = account.advance_to(utc(2026, 3, 5), cfg)
    assert not [e for e in clock if isinstance(e, PointsExpired)]
    start = len(account.new_events)
    account.reverse("r1", cfg, transaction_id="x1", now=utc(2026, 3, 5))
    # The points returned to lot A are past its expiry: they expire as they come back,
    # at the reversal, never backdated to the lot's own expiry (ADR 0018).
    returned = account.new_events[start:]
    assert returned[1:] == [PointsExpired(lot_id="lot-A", points=100, expired_at=utc(2026, 3, 5))]
    assert account.available == 100
    assert account.lots["lot-A"].expires_at == expiry_a
    assert account.advance_to(utc(2026, 3, 6), cfg) == []


def test_only_earns_and_redemptions_are_reversible() -> None:
    account, cfg = _two_lots()
    account.adjust(-10, cfg, transaction_id="adj", lot_id="unused", now=NOW)
    with pytest.raises(NotReversibleError):
        account.reverse("adj", cfg, transaction_id="x1", now=NOW)
    account.redeem(10, transaction_id="r1", now=NOW)
    account.reverse("r1", cfg, transaction_id="x2", now=NOW)
    with pytest.raises(NotReversibleError):
        account.reverse("x2", cfg, transaction_id="x3", now=NOW)


def test_negative_adjustment_consumes_lots_like_a_redemption() -> None:
    account, cfg = _two_lots()
    event = account.adjust(-120, cfg, transaction_id="adj", lot_id="unused", now=NOW)
    assert event.allocations == (Allocation("lot-A", 100), Allocation("lot-B", 20))
    assert account.available == 80
    with pytest.raises(InsufficientPointsError) as caught:
        account.adjust(-81, cfg, transaction_id="adj2", lot_id="unused", now=NOW)
    assert caught.value.extra == {"available": 80}
