"""Earning: rounding, breakdown, pending points and debt paid off by new points."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from ledger.domain.account import EarnBonus, MemberAccount
from ledger.domain.benefits import BonusCampaign, earn_bonuses
from ledger.domain.errors import (
    InsufficientPointsError,
    InvalidRequestError,
    LinesExceedPurchaseError,
    UnsupportedCurrencyError,
)
from ledger.domain.events import (
    BreakdownLine,
    EarnReversed,
    OrderLine,
    PendingPointsActivated,
    PointsEarned,
)
from ledger.domain.program import ProgramConfig, ReturnPolicy, Rounding, Tier

from tests.unit.support import bonus, config, earn, enrol, purchase, remaining, utc

AT = utc(2024, 3, 1, 12)


@pytest.mark.parametrize(
    ("amount", "rounding", "points"),
    [
        ("99.50", Rounding.DOWN, 99),
        ("99.50", Rounding.NEAREST, 100),
        ("99.50", Rounding.UP, 100),
        ("99.49", Rounding.DOWN, 99),
        ("99.49", Rounding.NEAREST, 99),
        ("99.49", Rounding.UP, 100),
        ("99.01", Rounding.UP, 100),
        ("99", Rounding.DOWN, 99),
        ("99", Rounding.UP, 99),
        ("0.99", Rounding.DOWN, 0),
    ],
)
def test_purchase_points_follow_the_programs_rounding(
    amount: str, rounding: Rounding, points: int
) -> None:
    account = enrol()
    event = earn(account, config(rounding=rounding), amount, AT, "t1")
    assert event.points == points
    assert event.qualifying_points == points
    assert account.available == points
    assert account.lifetime_earned == points
    assert account.lots["lot-t1"].original == points


def test_earn_rate_scales_the_amount() -> None:
    account = enrol()
    event = earn(account, config(earn_rates={"NOK": Decimal("0.1")}), "1234.56", AT, "t1")
    assert event.points == 123


def test_breakdown_explains_the_base_points() -> None:
    account = enrol()
    event = earn(account, config(), "99.50", AT, "t1")
    assert event.breakdown == (
        BreakdownLine("base", 99, "99.50 NOK x 1 points per unit = 99.50, rounded down"),
    )


def test_multiplier_adds_a_breakdown_line_and_does_not_qualify() -> None:
    account = enrol()
    event = earn(account, config(), "99.50", AT, "t1", multiplier=Decimal(2))
    # 99.50 x 2 = 199.00 exactly: rounded once, not 99 + 99.
    assert event.points == 199
    assert event.qualifying_points == 99
    assert [(line.rule, line.points) for line in event.breakdown] == [
        ("base", 99),
        ("tier", 100),
    ]
    assert event.breakdown[1].detail == "Gold x 2"
    assert account.available == 199
    assert account.qualifying == {"2024-03": 99}


def test_a_purchase_is_rounded_once_and_its_lines_add_up_to_its_points() -> None:
    account = enrol()
    event = earn(
        account, config(rounding=Rounding.NEAREST), "99.50", AT, "t1", multiplier=Decimal("1.5")
    )
    # base 99.50 -> 100; 99.50 x 1.5 = 149.25 -> 149, so the tier line is 49 (not 50).
    assert event.points == 149
    assert [(line.rule, line.points) for line in event.breakdown] == [
        ("base", 100),
        ("tier", 49),
    ]


@pytest.mark.parametrize(
    ("rounding", "points", "tier_line"),
    [(Rounding.DOWN, 5, -5), (Rounding.NEAREST, 5, -6), (Rounding.UP, 6, -5)],
)
def test_a_multiplier_below_1_rounds_the_purchase_by_the_programs_rule(
    rounding: Rounding, points: int, tier_line: int
) -> None:
    account = enrol()
    event = earn(account, config(rounding=rounding), "10.50", AT, "t1", multiplier=Decimal("0.5"))
    # 10.50 x 0.5 = 5.25: the negative extra is not floored away from zero on its own.
    assert (event.points, event.qualifying_points) == (points, rounding.apply(Decimal("10.50")))
    assert [line.points for line in event.breakdown[1:]] == [tier_line]
    assert sum(line.points for line in event.breakdown) == event.points


def test_stacked_bonuses_round_the_running_total_and_each_line_is_its_step() -> None:
    account = enrol()
    lines = (OrderLine("chew", 3, Decimal("33.33"), "pet"),)
    event = account.earn_purchase(
        purchase("100.99", AT, lines=lines),
        config(),
        transaction_id="t1",
        lot_id="l1",
        now=AT,
        bonuses=(
            EarnBonus("tier", "Silver", Decimal("1.25")),
            EarnBonus("campaign", "Pet days", Decimal(2), frozenset({"pet"})),
            EarnBonus("campaign", "Slow Monday", Decimal("0.9")),
        ),
    )
    # exact: 100.99 -> + 25.2475 = 126.2375 -> + 33.33 = 159.5675 -> - 10.099 = 149.4685
    assert [(line.rule, line.points) for line in event.breakdown] == [
        ("base", 100),
        ("tier", 26),
        ("campaign", 33),
        ("campaign", -10),
    ]
    assert event.points == 149 == sum(line.points for line in event.breakdown)
    assert event.qualifying_points == 100


def test_campaign_bonuses_stack_and_may_be_limited_to_categories() -> None:
    account = enrol()
    lines = (
        OrderLine("dog-food-12kg", 1, Decimal("600"), "dog_food"),
        OrderLine("leash", 1, Decimal("400"), "accessories"),
    )
    event = account.earn_purchase(
        purchase("1000", AT, lines=lines),
        config(),
        transaction_id="t1",
        lot_id="l1",
        now=AT,
        bonuses=(
            EarnBonus("tier", "Silver", Decimal("1.25")),
            EarnBonus("campaign", "Dog food week", Decimal(3), frozenset({"dog_food"})),
            EarnBonus("campaign", "Cat week", Decimal(2), frozenset({"cat_food"})),
        ),
    )
    assert [(line.rule, line.points, line.detail) for line in event.breakdown[1:]] == [
        ("tier", 250, "Silver x 1.25"),
        ("campaign", 1200, "Dog food week x 3"),
    ]
    assert (event.points, event.qualifying_points) == (2450, 1000)


def test_order_lines_adding_up_to_more_than_the_purchase_are_refused() -> None:
    account = enrol()
    # A line's amount is the line total: 2 x 300 is 300, not 600, and 300 + 700 > 999.
    lines = (
        OrderLine("dog-food-12kg", 2, Decimal("300"), "pet"),
        OrderLine("cat-tree", 1, Decimal("700"), "pet"),
    )
    with pytest.raises(LinesExceedPurchaseError) as caught:
        account.earn_purchase(
            purchase("999.99", AT, lines=lines),
            config(),
            transaction_id="t1",
            lot_id="l1",
            now=AT,
            bonuses=(EarnBonus("campaign", "Pet week", Decimal(2), frozenset({"pet"})),),
        )
    assert (caught.value.code, caught.value.status) == ("lines_exceed_purchase", 422)
    assert caught.value.extra == {"field": "lines", "lines_amount": "1000", "amount": "999.99"}
    assert len(account.new_events) == 1  # only the enrolment


def test_lines_up_to_the_purchase_earn_their_category_bonus_once_whatever_the_quantity() -> None:
    account = enrol()
    lines = (OrderLine("dog-food-12kg", 4, Decimal("100"), "pet"),)
    event = account.earn_purchase(
        purchase("100", AT, lines=lines),
        config(),
        transaction_id="t1",
        lot_id="l1",
        now=AT,
        bonuses=(EarnBonus("campaign", "Pet week", Decimal(2), frozenset({"pet"})),),
    )
    assert [(line.rule, line.points) for line in event.breakdown] == [
        ("base", 100),
        ("campaign", 100),
    ]


def test_earn_bonuses_pick_the_tier_and_the_matching_campaigns() -> None:
    ladder = (
        Tier("Bronze", 0),
        Tier("Silver", 5000, earn_multiplier=Decimal("1.25")),
    )
    store = purchase("100", AT, channel="store", store_id="oslo-1")
    weekend = BonusCampaign("Weekend", Decimal(2), channels=frozenset({"store"}))
    online = BonusCampaign("Online", Decimal(2), channels=frozenset({"online"}))
    gold_only = BonusCampaign("Gold", Decimal(3), tiers=frozenset({"Gold"}))
    bergen = BonusCampaign("Bergen", Decimal(2), store_ids=frozenset({"bergen-1"}))
    bonuses = earn_bonuses(store, ladder, "Silver", [weekend, online, gold_only, bergen])
    assert [(b.rule, b.name) for b in bonuses] == [("tier", "Silver"), ("campaign", "Weekend")]
    # Not placed yet: the entry tier (multiplier 1, no line); an unknown tier: none.
    assert earn_bonuses(store, ladder, None, []) == ()
    assert earn_bonuses(store, ladder, "Platinum", [gold_only]) == ()


def test_unsupported_currency_is_refused_with_the_supported_list() -> None:
    account = enrol()
    with pytest.raises(UnsupportedCurrencyError) as caught:
        account.earn_purchase(
            purchase("100", AT, currency="SEK"), config(), transaction_id="t1", lot_id="l1", now=AT
        )
    assert caught.value.extra == {"field": "currency", "supported": ["NOK"]}
    assert account.available == 0
    assert len(account.new_events) == 1  # only the enrolment


def test_earn_event_carries_local_month_and_expiry() -> None:
    account = enrol()
    # 23:30 UTC on 31 January is 00:30 on 1 February in Oslo.
    event = earn(account, config(), "100", utc(2024, 1, 31, 23, 30), "t1")
    assert event.qualifying_month == "2024-02"
    assert event.expires_at == utc(2026, 1, 31, 23, 30)
    assert event.available_at is None
    assert event.order_id == "order-t1"
    assert event.amount == Decimal(100)
    assert event.currency == "NOK"
    assert account.qualifying == {"2024-02": 100}


def test_bonus_points_qualify_only_when_asked() -> None:
    account = enrol()
    cfg = config()
    qualifying = bonus(account, cfg, 50, AT, "b1", qualifying=True)
    plain = bonus(account, cfg, 70, AT, "b2", qualifying=False)
    assert (qualifying.kind, qualifying.points, qualifying.qualifying_points) == ("bonus", 50, 50)
    assert (plain.points, plain.qualifying_points) == (70, 0)
    assert plain.breakdown == (BreakdownLine("bonus", 70, "test bonus"),)
    assert account.available == 120
    assert account.lifetime_earned == 120
    assert account.qualifying == {"2024-03": 50}


@pytest.mark.parametrize("points", [0, -5])
def test_bonus_points_must_be_positive(points: int) -> None:
    account = enrol()
    with pytest.raises(InvalidRequestError):
        bonus(account, config(), points, AT, "b1")


def test_pending_points_are_not_spendable_until_available_at() -> None:
    account = enrol()
    cfg = config(pending_days=14)
    event = earn(account, cfg, "100", AT, "t1")
    assert event.available_at == AT + timedelta(days=14)
    assert (account.available, account.pending) == (0, 100)
    assert account.lots["lot-t1"].pending

    with pytest.raises(InsufficientPointsError) as caught:
        account.redeem(1, transaction_id="r1", now=AT + timedelta(days=1))
    assert caught.value.extra == {"available": 0}

    assert account.advance_to(AT + timedelta(days=14, seconds=-1), cfg) == []
    assert (account.available, account.pending) == (0, 100)

    activated = account.advance_to(AT + timedelta(days=14), cfg)
    assert activated == [
        PendingPointsActivated(
            lot_id="lot-t1", points=100, activated_at=AT + timedelta(days=14), debt_paid=0
        )
    ]
    assert (account.available, account.pending) == (100, 0)
    assert account.advance_to(AT + timedelta(days=14), cfg) == []

    redeemed = account.redeem(100, transaction_id="r1", now=AT + timedelta(days=15))
    assert redeemed.points == 100
    assert account.available == 0


def test_pending_points_count_as_earned_and_qualifying_at_once() -> None:
    account = enrol()
    earn(account, config(pending_days=14), "100", AT, "t1")
    assert account.lifetime_earned == 100
    assert account.qualifying == {"2024-03": 100}


def test_a_late_earn_past_its_pending_period_is_available_at_once() -> None:
    account = enrol()
    event = earn(account, config(pending_days=14), "100", AT, "t1", now=AT + timedelta(days=14))
    assert event.available_at is None
    assert (account.available, account.pending) == (100, 0)


def test_a_purchase_slightly_ahead_of_the_server_clock_counts_as_now() -> None:
    account, cfg = _account_in_debt()
    now = AT + timedelta(days=3)
    # The till's clock runs 4 minutes ahead; the API accepts up to 5.
    event = earn(account, cfg, "150", now + timedelta(minutes=4), "t2", now=now)
    assert event.available_at is None
    assert event.earned_at == now
    assert event.debt_paid == 100
    assert (account.available, account.pending, account.debt) == (50, 0, 0)
    assert account.lots["lot-t2"].remaining == 50


def _account_in_debt(pending_days: int = 0) -> tuple[MemberAccount, ProgramConfig]:
    """100 earned and spent, then the earn refunded under the debt policy: debt 100."""
    cfg = config(return_policy=ReturnPolicy.DEBT, pending_days=pending_days)
    account = enrol()
    earn(account, cfg, "100", AT, "t1", now=AT + timedelta(days=pending_days))
    account.redeem(100, transaction_id="r1", now=AT + timedelta(days=pending_days))
    reversal = account.reverse(
        "t1", cfg, transaction_id="x1", now=AT + timedelta(days=pending_days)
    )
    assert isinstance(reversal, EarnReversed)
    assert reversal.debt_recorded == 100
    assert (account.available, account.debt) == (0, 100)
    return account, cfg


def test_the_next_earn_pays_off_debt_before_points_become_available() -> None:
    account, cfg = _account_in_debt()
    later = AT + timedelta(days=2)
    first = earn(account, cfg, "60", later, "t2")
    assert first.debt_paid == 60
    assert account.lots["lot-t2"].remaining == 0
    assert (account.available, account.debt) == (0, 40)

    second = earn(account, cfg, "100", later, "t3")
    assert second.debt_paid == 40
    assert account.lots["lot-t3"].remaining == 60
    assert (account.available, account.debt) == (60, 0)
    # Paying debt is still earning: the member earned 260 and had 100 reversed.
    assert account.lifetime_earned == 160


def test_a_pending_earn_pays_off_debt_when_it_activates() -> None:
    account, cfg = _account_in_debt(pending_days=14)
    later = AT + timedelta(days=20)
    event = earn(account, cfg, "150", later, "t2")
    assert event.debt_paid == 0
    assert (account.available, account.pending, account.debt) == (0, 150, 100)

    events = account.advance_to(later + timedelta(days=14), cfg)
    assert events == [
        PendingPointsActivated(
            lot_id="lot-t2", points=150, activated_at=later + timedelta(days=14), debt_paid=100
        )
    ]
    assert (account.available, account.pending, account.debt) == (50, 0, 0)
    assert remaining(account)["lot-t2"] == 50


def test_positive_adjustment_pays_off_debt() -> None:
    account, cfg = _account_in_debt()
    event = account.adjust(30, cfg, transaction_id="a1", lot_id="lot-a1", now=AT)
    assert event.debt_paid == 30
    assert (account.available, account.debt) == (0, 70)


def test_earned_event_is_recorded_and_returned() -> None:
    account = enrol()
    event = earn(account, config(), "10", AT, "t1")
    assert isinstance(event, PointsEarned)
    assert account.new_events[-1] is event
    assert account.transactions["t1"].kind == "earn"
    assert account.transactions["t1"].points == 10
