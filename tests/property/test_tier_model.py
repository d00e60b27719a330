"""The tier engine against a small, obviously correct model.

Random runs of earns, reversals (possibly dated in earlier months), late earns dated in
closed periods, period ends reported by the ledger and clock moves, for every period
kind, downgrade policy and two time zones. After every step the engine's tier must be
the model's, the announced tier must be the current one, the state must survive
storage, and a fresh state fed the same facts in another order must agree.

The model shares nothing with the engine but `loyalty_common.calendar`: it keeps the
raw (month, delta) list and the closed periods and recomputes the tier with a naive
loop (grace_days 0).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from loyalty_common.calendar import (
    QualificationKind,
    month_key,
    months_between,
    period_containing,
)
from rules.domain.tiers import MemberTiers, TierChanged, TierRules

THRESHOLDS = [0, 5000, 15000, 40000]
NAMES = ["Bronze", "Silver", "Gold", "Platinum"]
ZONES = ["UTC", "Europe/Oslo"]


def program(kind: str, policy: str, tz: str) -> dict[str, Any]:
    return {
        "time_zone": tz,
        "qualification_period": {"kind": kind},
        "tiers": [{"name": n, "threshold": t} for n, t in zip(NAMES, THRESHOLDS, strict=True)],
        "downgrade_policy": policy,
        "tier_policy": {"grace_days": 0, "progress_share": "0.1", "downgrade_warning_days": 30},
    }


# --- the model ---------------------------------------------------------------------------


def model_tier(
    kind: QualificationKind,
    policy: str,
    tz: str,
    enrolled_at: datetime,
    deltas: list[tuple[str, int]],
    closed: list[tuple[datetime, datetime]],
    now: datetime,
) -> str:
    def level(start: datetime, end: datetime) -> int:
        months = set(months_between(start, end, tz))
        total = sum(delta for month, delta in deltas if month in months)
        return max(i for i, threshold in enumerate(THRESHOLDS) if threshold <= max(total, 0))

    tier = 0
    for start, end in sorted(closed, key=lambda p: p[1]):
        reached = level(start, end)
        if reached >= tier:
            tier = reached
        elif policy == "one_down":
            tier = max(tier - 1, reached)
        else:
            tier = reached
    # Every period not yet reported closed, up to and including the open one, can only
    # lift the tier.
    best = tier
    at = closed[-1][1] if closed else enrolled_at
    while True:
        start, end = period_containing(at, kind, enrolled_at, tz)
        best = max(best, level(start, end))
        if end > now:
            return NAMES[best]
        at = end


# --- operations --------------------------------------------------------------------------

POINTS = st.integers(1, 20000)
OPS = st.one_of(
    st.tuples(st.just("earn"), POINTS),
    st.tuples(st.just("reverse"), st.integers(0, 14), POINTS),
    st.tuples(st.just("late"), st.integers(0, 100), st.integers(0, 11), POINTS),
    st.tuples(st.just("close"), st.none()),
    # Move the clock just past the next period end, then have the ledger report it.
    st.tuples(st.just("close"), st.integers(0, 3 * 24 * 60)),
    st.tuples(
        st.just("advance"),
        st.one_of(st.integers(0, 3 * 24 * 60), st.integers(0, 60 * 24 * 60)),
    ),
    st.tuples(st.just("advance"), st.integers(0, 400 * 24 * 60)),
)
ENROLMENTS = st.integers(0, 2 * 365 * 24 * 60).map(
    lambda minutes: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
)


def shift_month(month: str, back: int) -> str:
    index = int(month[:4]) * 12 + int(month[5:]) - 1 - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@pytest.mark.parametrize("policy", ["one_down", "recompute"])
@pytest.mark.parametrize("kind", list(QualificationKind))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tz=st.sampled_from(ZONES),
    enrolled_at=ENROLMENTS,
    ops=st.lists(OPS, min_size=3, max_size=40),
)
def test_engine_matches_model(
    kind: QualificationKind,
    policy: str,
    tz: str,
    enrolled_at: datetime,
    ops: list[tuple[Any, ...]],
) -> None:
    rules = TierRules.from_program(program(kind.value, policy, tz))
    state = MemberTiers.new(enrolled_at)
    [first] = state.enrol(rules, enrolled_at)
    assert isinstance(first, TierChanged)
    assert (first.from_tier, first.to_tier, first.reason) == (None, "Bronze", "enrolled")
    clock = enrolled_at
    deltas: list[tuple[str, int]] = []
    closed: list[tuple[datetime, datetime]] = []

    for op in ops:
        before = state.announced_tier
        reasons: set[str]
        if op[0] == "earn":
            month = month_key(clock, tz)
            deltas.append((month, op[1]))
            events = state.qualifying_changed(rules, month, op[1], clock)
            reasons = {"qualified"}
        elif op[0] == "reverse":
            # A refund takes back at most what that month earned (as at the ledger), so
            # no bucket goes below zero.
            month = shift_month(month_key(clock, tz), op[1])
            points = min(op[2], sum(delta for m, delta in deltas if m == month))
            if points <= 0:
                continue
            deltas.append((month, -points))
            events = state.qualifying_changed(rules, month, -points, clock)
            reasons = {"reevaluated"}
        elif op[0] == "late":
            if not closed:
                continue
            start, end = closed[op[1] % len(closed)]
            months = months_between(start, end, tz)
            month = months[op[2] % len(months)]
            deltas.append((month, op[3]))
            events = state.qualifying_changed(rules, month, op[3], clock)
            reasons = {"qualified", "reevaluated"}
        elif op[0] == "close":
            start, end = period_containing(
                closed[-1][1] if closed else enrolled_at, kind, enrolled_at, tz
            )
            if op[1] is not None:
                clock = max(clock, end + timedelta(minutes=op[1]))
                assert [e for e in state.tick(rules, clock) if isinstance(e, TierChanged)] == []
            if end > clock:
                continue
            closed.append((start, end))
            events = state.period_ended(rules, start, end, clock)
            reasons = {"requalification_missed"}
            assert all(e.occurred_at == end for e in events if isinstance(e, TierChanged))
        else:
            clock += timedelta(minutes=op[1])
            events = state.tick(rules, clock)
            reasons = set()  # with no grace, time alone never changes the tier

        changed = [e for e in events if isinstance(e, TierChanged)]
        assert len(changed) <= 1
        for change in changed:
            assert change.reason in reasons, (op, change)
            assert (change.from_tier, change.to_tier) == (before, state.announced_tier)
            assert change.from_tier != change.to_tier

        expected = model_tier(kind, policy, tz, enrolled_at, deltas, closed, clock)
        shown = state.view(rules, clock)
        assert shown.tier == expected, (op, shown)
        assert state.announced_tier == expected
        assert shown.period_start <= clock < shown.period_end

        stored = json.loads(json.dumps(state.to_dict()))
        assert MemberTiers.from_dict(stored) == state

        # The same facts in another order: all deltas, then the period ends backwards.
        fresh = MemberTiers.new(enrolled_at)
        fresh.enrol(rules, enrolled_at)
        for month, delta in deltas:
            fresh.qualifying_changed(rules, month, delta, enrolled_at)
        for start, end in reversed(closed):
            fresh.period_ended(rules, start, end, enrolled_at)
        fresh.tick(rules, clock)
        assert fresh.view(rules, clock).tier == expected
        assert fresh.announced_tier == expected
