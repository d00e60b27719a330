"""Examples of the tier engine (`rules.domain.tiers`): upgrades, period ends, grace,
late events, period kinds, progress and warnings, storage, the view."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rules.domain.tiers import (
    MemberTiers,
    TierChanged,
    TierDowngradeWarning,
    TierProgress,
    TierRules,
)

OSLO = "Europe/Oslo"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def oslo_year(year: int) -> tuple[datetime, datetime]:
    """Calendar year `year` in Oslo as UTC instants (local midnight is 23:00 UTC)."""
    return utc(year - 1, 12, 31, 23), utc(year, 12, 31, 23)


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "time_zone": OSLO,
        "qualification_period": {"kind": "calendar_year"},
        "tiers": [
            {"name": "Bronze", "threshold": 0, "discount_percent": "5", "earn_multiplier": "1"},
            {"name": "Silver", "threshold": 5000, "earn_multiplier": "1.25"},
            {"name": "Gold", "threshold": 15000, "earn_multiplier": "1.5"},
        ],
        "downgrade_policy": "one_down",
        "tier_policy": {"grace_days": 0, "progress_share": "0.1", "downgrade_warning_days": 30},
        "point_lifetime": {"kind": "rolling_months", "months": 24},
    }
    base.update(overrides)
    return base


def rules(**overrides: Any) -> TierRules:
    return TierRules.from_program(config(**overrides))


def enrolled(r: TierRules, at: datetime = utc(2026, 1, 10)) -> MemberTiers:
    state = MemberTiers.new(at)
    [first] = state.enrol(r, at)
    assert isinstance(first, TierChanged) and first.reason == "enrolled"
    return state


def changes(events: list[Any]) -> list[TierChanged]:
    return [e for e in events if isinstance(e, TierChanged)]


def gold_in_2026(r: TierRules) -> MemberTiers:
    """A member who earned Gold in 2026, with 2026 closed."""
    state = enrolled(r)
    state.qualifying_changed(r, "2026-03", 16000, utc(2026, 3, 3))
    assert state.announced_tier == "Gold"
    assert state.period_ended(r, *oslo_year(2026), utc(2027, 1, 1)) == []
    return state


# --- rules -------------------------------------------------------------------------------


def test_rules_defaults_when_tier_policy_missing() -> None:
    cfg = config()
    del cfg["tier_policy"]
    r = TierRules.from_program(cfg)
    assert (r.grace_days, r.downgrade_warning_days) == (0, 30)
    assert str(r.progress_share) == "0.1"
    assert [t.name for t in r.tiers] == ["Bronze", "Silver", "Gold"]


def test_rules_reject_bad_ladders() -> None:
    with pytest.raises(ValueError):
        rules(tiers=[{"name": "A", "threshold": 10}])
    with pytest.raises(ValueError):
        rules(tiers=[{"name": "A", "threshold": 0}, {"name": "B", "threshold": 0}])
    with pytest.raises(ValueError):
        rules(downgrade_policy="sometimes")


# --- upgrades ----------------------------------------------------------------------------


def test_enrol_announces_the_entry_tier() -> None:
    r = rules()
    state = MemberTiers.new(utc(2026, 1, 10))
    assert state.announced_tier is None
    assert state.enrol(r, utc(2026, 1, 10, 8)) == [
        TierChanged(
            occurred_at=utc(2026, 1, 10, 8),
            from_tier=None,
            to_tier="Bronze",
            reason="enrolled",
            valid_until=None,
            qualifying_points=0,
        )
    ]
    assert state.announced_tier == "Bronze"
    assert state.enrol(r, utc(2026, 1, 10, 8)) == []


def test_upgrade_to_silver_then_gold() -> None:
    r = rules()
    state = enrolled(r)
    [silver] = changes(state.qualifying_changed(r, "2026-02", 6000, utc(2026, 2, 1, 12)))
    assert silver == TierChanged(
        occurred_at=utc(2026, 2, 1, 12),
        from_tier="Bronze",
        to_tier="Silver",
        reason="qualified",
        valid_until=oslo_year(2027)[1],
        qualifying_points=6000,
    )
    [gold] = changes(state.qualifying_changed(r, "2026-04", 9500, utc(2026, 4, 1)))
    assert (gold.from_tier, gold.to_tier, gold.reason) == ("Silver", "Gold", "qualified")
    assert gold.qualifying_points == 15500
    assert state.announced_tier == "Gold"


def test_crossing_two_thresholds_in_one_call_is_one_change() -> None:
    r = rules()
    state = enrolled(r)
    events = state.qualifying_changed(r, "2026-03", 16000, utc(2026, 3, 3))
    assert len(events) == 1
    [gold] = changes(events)
    assert (gold.from_tier, gold.to_tier, gold.reason) == ("Bronze", "Gold", "qualified")
    assert gold.occurred_at == utc(2026, 3, 3)


def test_reversal_in_the_open_period_undoes_the_upgrade() -> None:
    r = rules()
    state = enrolled(r)
    state.qualifying_changed(r, "2026-03", 6000, utc(2026, 3, 3))
    [back] = changes(state.qualifying_changed(r, "2026-03", -2000, utc(2026, 3, 4)))
    assert (back.from_tier, back.to_tier, back.reason) == ("Silver", "Bronze", "reevaluated")
    assert back.valid_until is None
    assert back.qualifying_points == 4000


# --- period ends -------------------------------------------------------------------------


def test_requalified_member_keeps_the_tier_at_period_end() -> None:
    r = rules()
    state = gold_in_2026(r)
    state.qualifying_changed(r, "2027-05", 15000, utc(2027, 5, 5))
    assert state.period_ended(r, *oslo_year(2027), utc(2028, 1, 1)) == []
    assert state.view(r, utc(2028, 1, 2)).tier == "Gold"


@pytest.mark.parametrize(("policy", "to_tier"), [("one_down", "Silver"), ("recompute", "Bronze")])
def test_downgrade_after_a_period_without_points(policy: str, to_tier: str) -> None:
    r = rules(downgrade_policy=policy)
    state = gold_in_2026(r)
    assert state.view(r, utc(2027, 6, 1)).tier == "Gold"
    end = oslo_year(2027)[1]
    [down] = state.period_ended(r, *oslo_year(2027), utc(2028, 1, 1, 3))
    assert down == TierChanged(
        occurred_at=end,
        from_tier="Gold",
        to_tier=to_tier,
        reason="requalification_missed",
        valid_until=None if to_tier == "Bronze" else oslo_year(2028)[1],
        qualifying_points=0,
    )
    assert state.announced_tier == to_tier


def test_a_repeated_period_end_changes_nothing() -> None:
    r = rules()
    state = gold_in_2026(r)
    state.period_ended(r, *oslo_year(2027), utc(2028, 1, 1))
    before = state.to_dict()
    assert state.period_ended(r, *oslo_year(2027), utc(2028, 1, 1)) == []
    assert state.to_dict() == before


def test_no_downgrade_before_the_ledger_reports_the_period_end() -> None:
    r = rules()
    state = gold_in_2026(r)
    assert state.tick(r, utc(2028, 1, 3)) == []
    assert state.view(r, utc(2028, 1, 3)).tier == "Gold"
    [down] = state.period_ended(r, *oslo_year(2027), utc(2028, 1, 4))
    assert (down.to_tier, down.occurred_at) == ("Silver", oslo_year(2027)[1])


def test_grace_days_delay_the_downgrade_to_tick() -> None:
    r = rules(tier_policy={"grace_days": 30})
    state = gold_in_2026(r)
    end = oslo_year(2027)[1]
    assert state.period_ended(r, *oslo_year(2027), utc(2028, 1, 1)) == []
    assert state.announced_tier == "Gold"
    assert state.next_check_at(r) == end + timedelta(days=30)
    shown = state.view(r, utc(2028, 1, 5))
    assert (shown.tier, shown.valid_until, shown.projected_tier) == (
        "Gold",
        end + timedelta(days=30),
        "Bronze",
    )
    assert state.tick(r, end + timedelta(days=29)) == []
    [down] = state.tick(r, end + timedelta(days=31))
    assert (down.from_tier, down.to_tier, down.reason) == (
        "Gold",
        "Silver",
        "requalification_missed",
    )
    assert down.occurred_at == end + timedelta(days=30)
    assert state.tick(r, end + timedelta(days=32)) == []


# --- late events -------------------------------------------------------------------------


def test_late_purchase_in_a_closed_period_reevaluates_up() -> None:
    r = rules()
    state = gold_in_2026(r)
    state.qualifying_changed(r, "2027-11", 14000, utc(2027, 11, 20))
    [down] = state.period_ended(r, *oslo_year(2027), utc(2028, 1, 1))
    assert down.to_tier == "Silver"
    [up] = changes(state.qualifying_changed(r, "2027-12", 2000, utc(2028, 1, 5)))
    assert up == TierChanged(
        occurred_at=utc(2028, 1, 5),
        from_tier="Silver",
        to_tier="Gold",
        reason="reevaluated",
        valid_until=oslo_year(2028)[1],
        qualifying_points=0,
    )


def test_reversal_in_a_closed_period_reevaluates_down() -> None:
    r = rules()
    state = gold_in_2026(r)
    state.qualifying_changed(r, "2027-11", 15000, utc(2027, 11, 20))
    assert state.period_ended(r, *oslo_year(2027), utc(2028, 1, 1)) == []
    [down] = changes(state.qualifying_changed(r, "2027-11", -2000, utc(2028, 1, 10)))
    assert (down.from_tier, down.to_tier, down.reason) == ("Gold", "Silver", "reevaluated")
    assert down.occurred_at == utc(2028, 1, 10)


def test_a_late_event_does_not_move_time_backwards() -> None:
    r = rules()
    state = gold_in_2026(r)
    state.qualifying_changed(r, "2026-06", 10, utc(2026, 6, 1))
    assert state.now == utc(2027, 1, 1)


# --- period kinds ------------------------------------------------------------------------


def test_rolling_12_months_windows() -> None:
    r = rules(time_zone="UTC", qualification_period={"kind": "rolling_12_months"})
    state = enrolled(r, utc(2026, 1, 15))
    [silver] = changes(state.qualifying_changed(r, "2026-02", 6000, utc(2026, 2, 10)))
    assert silver.to_tier == "Silver"
    # The open window is the trailing twelve months ending with February.
    shown = state.view(r, utc(2026, 2, 10))
    assert (shown.period_start, shown.period_end) == (utc(2025, 3, 1), utc(2026, 3, 1))
    # Valid until the first window without February 2026's points ends.
    assert silver.valid_until == utc(2027, 3, 1)
    end = utc(2026, 2, 1)
    while end < utc(2027, 3, 1):
        start, end = (
            end.replace(year=end.year - 1),
            end.replace(year=end.year + (end.month == 12), month=end.month % 12 + 1),
        )
        assert state.period_ended(r, start, end, end) == []
    [down] = state.period_ended(r, utc(2026, 3, 1), utc(2027, 3, 1), utc(2027, 3, 1))
    assert (down.from_tier, down.to_tier, down.occurred_at) == ("Silver", "Bronze", utc(2027, 3, 1))


def test_anniversary_periods() -> None:
    r = rules(qualification_period={"kind": "anniversary"})
    state = enrolled(r, utc(2026, 5, 20))
    shown = state.view(r, utc(2026, 5, 20))
    first = (utc(2026, 4, 30, 22), utc(2027, 4, 30, 22))  # 1 May local, summer time
    assert (shown.period_start, shown.period_end) == first
    [silver] = changes(state.qualifying_changed(r, "2026-06", 6000, utc(2026, 6, 1)))
    assert silver.valid_until == utc(2028, 4, 30, 22)
    assert state.period_ended(r, *first, utc(2027, 5, 1)) == []
    second = (first[1], utc(2028, 4, 30, 22))
    assert state.view(r, utc(2027, 5, 2)).period_start == second[0]
    [down] = state.period_ended(r, *second, utc(2028, 5, 1))
    assert (down.to_tier, down.occurred_at) == ("Bronze", second[1])


# --- progress and warnings ---------------------------------------------------------------


def test_progress_is_announced_once() -> None:
    r = rules()
    state = enrolled(r)
    assert state.qualifying_changed(r, "2026-02", 4000, utc(2026, 2, 1)) == []
    [progress] = state.qualifying_changed(r, "2026-02", 600, utc(2026, 2, 2))
    assert progress == TierProgress(
        occurred_at=utc(2026, 2, 2),
        current_tier="Bronze",
        next_tier="Silver",
        qualifying_points=4600,
        points_to_next=400,
        period_end=oslo_year(2026)[1],
    )
    assert state.qualifying_changed(r, "2026-02", 100, utc(2026, 2, 3)) == []
    # The next step (Silver → Gold) gets its own.
    [silver] = state.qualifying_changed(r, "2026-03", 8000, utc(2026, 3, 1))
    assert isinstance(silver, TierChanged)
    [gold_near] = state.qualifying_changed(r, "2026-03", 1000, utc(2026, 3, 2))
    assert isinstance(gold_near, TierProgress)
    assert (gold_near.current_tier, gold_near.next_tier) == ("Silver", "Gold")
    assert gold_near.points_to_next == 15000 - 13700


def test_downgrade_warning_is_sent_once() -> None:
    r = rules()
    state = gold_in_2026(r)
    state.qualifying_changed(r, "2027-03", 1000, utc(2027, 3, 1))
    end = oslo_year(2027)[1]
    due = end - timedelta(days=30)
    assert state.next_check_at(r) == due
    assert state.tick(r, due - timedelta(hours=1)) == []
    [warning] = state.tick(r, due + timedelta(days=1))
    assert warning == TierDowngradeWarning(
        occurred_at=due,
        current_tier="Gold",
        expected_tier="Silver",
        qualifying_points=1000,
        points_needed=14000,
        period_end=end,
        downgrade_at=end,
    )
    assert state.tick(r, due + timedelta(days=2)) == []
    assert state.next_check_at(r) is None


def test_no_warning_when_requalified() -> None:
    r = rules()
    state = gold_in_2026(r)
    state.qualifying_changed(r, "2027-03", 15000, utc(2027, 3, 1))
    assert state.next_check_at(r) is None
    assert state.tick(r, utc(2027, 12, 20)) == []


# --- storage, empty ladders, missing rules -----------------------------------------------


def test_to_dict_round_trips_through_json() -> None:
    r = rules(tier_policy={"grace_days": 30})
    state = gold_in_2026(r)
    state.qualifying_changed(r, "2027-03", 4600, utc(2027, 3, 1))
    state.qualifying_changed(r, "2027-04", -100, utc(2027, 4, 1))
    state.tick(r, utc(2027, 12, 5))
    stored = json.loads(json.dumps(state.to_dict()))
    again = MemberTiers.from_dict(stored)
    assert again == state
    assert again.to_dict() == state.to_dict()


def test_empty_ladder_gives_no_events() -> None:
    r = rules(tiers=[])
    state = MemberTiers.new(utc(2026, 1, 10))
    assert state.enrol(r, utc(2026, 1, 10)) == []
    assert state.qualifying_changed(r, "2026-02", 20000, utc(2026, 2, 1)) == []
    assert state.period_ended(r, *oslo_year(2026), utc(2027, 1, 1)) == []
    assert state.evaluate(r, utc(2027, 1, 2)) == []
    assert state.tick(r, utc(2027, 12, 20)) == []
    assert state.announced_tier is None
    assert state.next_check_at(r) is None
    shown = state.view(r, utc(2027, 12, 20))
    assert (shown.tier, shown.next_tier, shown.projected_tier) == (None, None, None)


def test_facts_before_rules_then_evaluate() -> None:
    state = MemberTiers.new(utc(2026, 1, 10))
    assert state.enrol(None, utc(2026, 1, 10)) == []
    assert state.qualifying_changed(None, "2026-02", 6000, utc(2026, 2, 1)) == []
    assert state.announced_tier is None
    assert state.next_check_at(None) is None
    r = rules()
    [change] = state.evaluate(r, utc(2026, 2, 5))
    assert isinstance(change, TierChanged)
    assert (change.from_tier, change.to_tier, change.reason) == (None, "Silver", "enrolled")
    assert change.occurred_at == utc(2026, 2, 5)
    assert state.evaluate(r, utc(2026, 2, 6)) == []


def test_evaluate_with_new_rules_reevaluates() -> None:
    state = enrolled(rules())
    state.qualifying_changed(rules(), "2026-02", 6000, utc(2026, 2, 1))
    assert state.announced_tier == "Silver"
    cheaper = rules(
        tiers=[{"name": "Bronze", "threshold": 0}, {"name": "Silver", "threshold": 8000}]
    )
    [change] = state.evaluate(cheaper, utc(2026, 2, 5))
    assert isinstance(change, TierChanged)
    assert (change.from_tier, change.to_tier, change.reason) == ("Silver", "Bronze", "reevaluated")


# --- the view ----------------------------------------------------------------------------


def test_view_fields() -> None:
    r = rules()
    state = enrolled(r)
    state.qualifying_changed(r, "2026-02", 6000, utc(2026, 2, 1))
    shown = state.view(r, utc(2026, 2, 2))
    assert shown.tier == "Silver"
    assert shown.valid_until == oslo_year(2027)[1]
    assert (shown.qualifying_points, shown.next_tier, shown.points_to_next) == (6000, "Gold", 9000)
    assert (shown.period_start, shown.period_end) == oslo_year(2026)
    assert shown.projected_tier == "Silver"

    state.period_ended(r, *oslo_year(2026), utc(2027, 1, 1))
    shown = state.view(r, utc(2027, 2, 1))
    assert (shown.tier, shown.qualifying_points, shown.points_to_next) == ("Silver", 0, 15000)
    assert shown.valid_until == oslo_year(2027)[1]
    assert shown.projected_tier == "Bronze"

    gold = gold_in_2026(r).view(r, utc(2027, 2, 1))
    assert (gold.tier, gold.next_tier, gold.points_to_next) == ("Gold", None, None)


def test_view_for_the_entry_tier() -> None:
    r = rules()
    shown = enrolled(r).view(r, utc(2026, 3, 1))
    assert (shown.tier, shown.valid_until, shown.projected_tier) == ("Bronze", None, "Bronze")
    assert (shown.next_tier, shown.points_to_next) == ("Silver", 5000)


def test_same_facts_give_the_same_events() -> None:
    r = rules(tier_policy={"grace_days": 30})

    def run() -> list[Any]:
        state = gold_in_2026(r)
        events = state.period_ended(r, *oslo_year(2027), utc(2028, 1, 1))
        events += state.tick(r, utc(2028, 3, 1))
        return events

    first, second = run(), run()
    assert first == second
    assert [e.occurred_at for e in first] == [oslo_year(2027)[1] + timedelta(days=30)]
