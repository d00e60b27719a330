"""The tier engine: which tier a member holds, and what to announce about it.

Pure code: no I/O and no clock reads; every time is passed in (timezone-aware, UTC).

Facts
-----
A member's :class:`MemberTiers` keeps only facts, and derives everything else:

* ``enrolled_at``;
* qualifying points per month bucket (``{"2026-03": 1200}``, months in the program's
  time zone): the sum of the deltas reported for that month. A bucket may hold any
  value, including a temporarily negative one; a period's *total* is the sum of its
  months' buckets, floored at 0 for tier purposes;
* the closed qualification periods ``[start, end)`` the ledger reported (repeats are
  ignored; kept sorted by end; periods ending at or before ``enrolled_at`` are ignored);
* the watermark ``now``: the latest time the state has been told (the maximum of
  ``enrolled_at`` and every ``at``/``now``/period ``end`` passed in), so a late event
  dated in the past never moves time backwards;
* announcement bookkeeping: ``announced_tier`` (the tier the last ``TierChanged``
  announced; ``None`` until the first call with rules), and the keys of the progress
  and warning events already sent.

Definitions
-----------
``achieved(total)`` is the highest tier whose threshold is ``<= total`` (the entry tier,
threshold 0, for any total ``<= 0``). Tiers are ordered by threshold; "one step down"
is the next lower tier on the ladder.

The tier held is a fold over the closed periods in order of their end, starting from
the entry tier. For each closed period P with total T, entered with tier E:

* if ``achieved(T) >= E`` the member re-qualified (or went up): the outcome is
  ``achieved(T)`` and takes effect at ``P.end``;
* otherwise the outcome is ``max(E - 1 step, achieved(T))`` under the ``one_down``
  policy, ``achieved(T)`` under ``recompute``; this downgrade takes effect at
  ``P.end + grace_days`` (24-hour days; at ``P.end`` when ``grace_days`` is 0), and the
  member holds E until then.

The outcome is the tier the next period is entered with. The *held* tier at ``now`` is
the outcome of the last closed period (in fold order) whose outcome has taken effect
at ``now``, or the entry tier if there is none; later outcomes still waiting for their
grace to run out are *pending downgrades*.

The *open* period is ``period_containing(now, kind, enrolled_at, tz)``. Periods that
have ended by the clock but that the ledger has not reported closed yet (between the
last closed period, or the enrolment, and the open period) are *unreported*: their
points count like the open period's (they can lift the tier) but they never lower it,
because only a reported period end (or a grace expiry) downgrades. This keeps a member
from being downgraded in the gap between the clock passing a period end and the ledger
reporting it.

The *current* tier is ``max(held, achieved(total of each unreported period),
achieved(open period total))``. Upgrades therefore count as soon as the points are
there. A reversal in the open period that takes its total back below a threshold the
member crossed in that period *does* bring the tier back down: the upgrade was based on
points that no longer exist. (A tier earned in a period that has since closed is
kept by the fold, whatever happens in the open period.)

Rolling 12 months: the ledger closes the trailing twelve-month window at every month
end (overlapping windows); the same fold applies window by window, and the open period
is the window ending at the end of the current month.

The open period is *entered* with ``max(outcome of the fold, achieved(unreported
periods))`` (grace ignored). The ``projected_tier`` is the period-end rule applied to
the open period with its current total: the tier the member would enter the next
period with if nothing changes.

``valid_until`` of the current tier: ``None`` for the entry tier. If the current tier
is only held because a downgrade's grace is still running, the earliest pending
downgrade time. Else, if the open period's total already re-qualifies the current tier
(``achieved(open total) >= current``): the end of the period after the open one (for
rolling windows: the end of the first future window which, with the buckets as they
are, falls below the tier's threshold) plus grace; otherwise the open period's end
plus grace.

Announcements
-------------
Every method mutates the state and returns the events to announce. After every call the
current tier at the watermark is computed; if it differs from ``announced_tier``, one
``TierChanged(from_tier=announced, to_tier=current)`` is emitted (several steps in one
call give one event) with ``qualifying_points`` = the open period's total and
``valid_until`` as above. Its ``reason`` (the values of ``tiers.proto``):

* ``enrolled`` for the first announcement: the first call with a non-empty ladder
  (normally ``enrol``) announces the current tier (the entry tier for a new member)
  with ``from_tier=None`` (empty on the wire) and ``occurred_at`` = the call's ``at``;
* ``reevaluated`` for a change caused by ``qualifying_changed`` when the delta changed
  the fold's outcome (a late event or reversal dated in a closed period) or lowered
  the tier (a reversal in the open period), and for any change found by ``evaluate``
  (rules that arrived after the facts); ``occurred_at`` is the call's ``at``;
* ``qualified`` for any other rise (points in the open or an unreported period reached a
  higher tier); ``occurred_at`` is the call's ``at`` (``now`` for ``tick``);
* ``requalification_missed`` for a fall on a period end or a grace expiry (``period_ended``,
  ``tick``); ``occurred_at`` is the moment the held tier took effect (the period end,
  or end plus grace), which does not depend on when the call ran.

``TierProgress`` is emitted by ``qualifying_changed`` when the current tier is not the
top one, the open total is below the next tier's threshold and ``points_to_next <=
progress_share * next_threshold``; once per (open period start, next tier).

``TierDowngradeWarning`` is emitted by ``tick`` when ``now >= open_end -
downgrade_warning_days`` and the projected tier is lower than the current tier; once per
open period. ``occurred_at = open_end - downgrade_warning_days`` (deterministic),
``points_needed`` = the current tier's threshold minus the open total, ``downgrade_at`` =
``open_end + grace_days``. ``downgrade_warning_days <= 0`` disables warnings.

``next_check_at`` is the earliest of the pending downgrades' effective times and, if
a downgrade is projected and the open period's warning has not been sent, the warning
time (possibly already past: the next clock run sends it). Period ends are not
included: the ledger reports them.

With an empty ladder (no tiers) facts are still recorded, every method returns ``[]``,
``announced_tier`` stays ``None`` and the view's tier is ``None``. Methods also accept
``rules=None`` (the program's configuration has not arrived): facts are recorded and
nothing is announced; ``evaluate`` later catches up.

Determinism: the same facts give the same events with the same ``occurred_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, Literal

from loyalty_common.calendar import QualificationKind, months_between, period_containing

DowngradePolicy = Literal["one_down", "recompute"]
# TierChanged.reason values, as documented in proto/loyalty/rules/v1/tiers.proto.
ENROLLED = "enrolled"
QUALIFIED = "qualified"  # went up on points of the open (or an unreported) period
REQUALIFICATION_MISSED = "requalification_missed"  # down on a period end or grace expiry
REEVALUATED = "reevaluated"  # a late event / reversal, or rules that arrived late
_Cause = Literal["enrol", "delta", "period", "evaluate", "tick"]
_MAX_ROLLING_LOOKAHEAD = 1200  # months; bounds the valid_until search over future buckets


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime: {at!r}")
    return at.astimezone(UTC)


def _parse(value: str) -> datetime:
    return _utc(datetime.fromisoformat(value))


# --- rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    name: str
    threshold: int


@dataclass(frozen=True)
class TierRules:
    time_zone: str
    kind: QualificationKind
    tiers: tuple[Tier, ...]
    downgrade_policy: DowngradePolicy = "one_down"
    grace_days: int = 0
    progress_share: Decimal = Decimal("0.1")
    downgrade_warning_days: int = 30

    @classmethod
    def from_program(cls, config: dict[str, Any]) -> TierRules:
        tiers = tuple(
            Tier(str(t["name"]), int(t.get("threshold", 0))) for t in config.get("tiers") or []
        )
        tiers = tuple(sorted(tiers, key=lambda t: t.threshold))
        if tiers:
            if tiers[0].threshold != 0:
                raise ValueError("the first tier's threshold must be 0")
            for lower, upper in pairwise(tiers):
                if upper.threshold <= lower.threshold:
                    raise ValueError("tier thresholds must strictly increase")
        policy: DowngradePolicy
        match config.get("downgrade_policy") or "one_down":
            case "one_down":
                policy = "one_down"
            case "recompute":
                policy = "recompute"
            case other:
                raise ValueError(f"unknown downgrade_policy {other!r}")
        period = config.get("qualification_period") or {}
        tier_policy = config.get("tier_policy") or {}
        return cls(
            time_zone=str(config.get("time_zone") or "UTC"),
            kind=QualificationKind(period.get("kind") or QualificationKind.CALENDAR_YEAR),
            tiers=tiers,
            downgrade_policy=policy,
            grace_days=int(tier_policy.get("grace_days", 0)),
            progress_share=Decimal(str(tier_policy.get("progress_share", "0.1"))),
            downgrade_warning_days=int(tier_policy.get("downgrade_warning_days", 30)),
        )

    @property
    def grace(self) -> timedelta:
        return timedelta(days=self.grace_days)

    def achieved(self, total: int) -> int:
        """Index of the highest tier whose threshold is <= total (0 for total <= 0)."""
        best = 0
        for index, tier in enumerate(self.tiers):
            if tier.threshold <= total:
                best = index
        return best

    def outcome(self, entering: int, achieved: int) -> int:
        """The tier the next period is entered with (the period-end rule)."""
        if achieved >= entering:
            return achieved
        if self.downgrade_policy == "one_down":
            return max(entering - 1, achieved)
        return achieved

    def rank(self, name: str | None) -> int | None:
        for index, tier in enumerate(self.tiers):
            if tier.name == name:
                return index
        return None


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierChanged:
    occurred_at: datetime
    from_tier: str | None  # None for the first announcement (reason "enrolled")
    to_tier: str
    reason: str
    valid_until: datetime | None
    qualifying_points: int


@dataclass(frozen=True)
class TierProgress:
    occurred_at: datetime
    current_tier: str
    next_tier: str
    qualifying_points: int
    points_to_next: int
    period_end: datetime


@dataclass(frozen=True)
class TierDowngradeWarning:
    occurred_at: datetime
    current_tier: str
    expected_tier: str
    qualifying_points: int
    points_needed: int
    period_end: datetime
    downgrade_at: datetime


TierEvent = TierChanged | TierProgress | TierDowngradeWarning


@dataclass(frozen=True)
class TierView:
    tier: str | None
    valid_until: datetime | None
    qualifying_points: int
    period_start: datetime
    period_end: datetime
    next_tier: str | None
    points_to_next: int | None
    projected_tier: str | None


# --- the fold ----------------------------------------------------------------------------

Period = tuple[datetime, datetime]


@dataclass(frozen=True)
class Standing:
    """Everything derived from the facts at one moment (tier indexes into the ladder)."""

    tier: int  # the current tier
    held: int  # the fold's tier in effect at `now` (grace respected)
    held_since: datetime | None  # when `held` took effect (None: entry tier, no period)
    entering: int  # the tier the open period is entered with (grace ignored)
    open_start: datetime
    open_end: datetime
    open_total: int  # floored at 0
    pending: tuple[datetime, ...]  # effective times of downgrades still in grace
    projected: int


def period_total(rules: TierRules, buckets: dict[str, int], start: datetime, end: datetime) -> int:
    """The raw (unfloored) sum of the buckets of the months in ``[start, end)``."""
    return sum(buckets.get(month, 0) for month in months_between(start, end, rules.time_zone))


def fold(
    rules: TierRules,
    enrolled_at: datetime,
    buckets: dict[str, int],
    closed: list[Period],
    now: datetime,
) -> Standing:
    """The member's standing at ``now`` computed from scratch (ladder must be non-empty)."""
    tz, kind = rules.time_zone, rules.kind

    def achieved(start: datetime, end: datetime) -> int:
        return rules.achieved(period_total(rules, buckets, start, end))

    outcomes: list[tuple[int, datetime]] = []
    entering = 0
    for start, end in closed:
        if end <= enrolled_at:
            continue
        reached = achieved(start, end)
        outcome = rules.outcome(entering, reached)
        effective = end if outcome >= entering else end + rules.grace
        outcomes.append((outcome, effective))
        entering = outcome

    held, held_since, last = 0, None, -1
    for index, (outcome, effective) in enumerate(outcomes):
        if effective <= now:
            held, held_since, last = outcome, effective, index
    pending = tuple(effective for _, effective in outcomes[last + 1 :])

    open_start, open_end = period_containing(now, kind, enrolled_at, tz)
    unreported = 0
    cursor = closed[-1][1] if outcomes else enrolled_at
    while True:
        start, end = period_containing(cursor, kind, enrolled_at, tz)
        if end >= open_end:
            break  # reached the open period
        unreported = max(unreported, achieved(start, end))
        cursor = end

    open_total = max(0, period_total(rules, buckets, open_start, open_end))
    open_reached = rules.achieved(open_total)
    entering = max(entering, unreported)
    return Standing(
        tier=max(held, unreported, open_reached),
        held=held,
        held_since=held_since,
        entering=entering,
        open_start=open_start,
        open_end=open_end,
        open_total=open_total,
        pending=pending,
        projected=rules.outcome(entering, open_reached),
    )


def valid_until(
    rules: TierRules, buckets: dict[str, int], enrolled_at: datetime, standing: Standing
) -> datetime | None:
    tier = standing.tier
    if tier == 0:
        return None
    if tier > max(standing.entering, rules.achieved(standing.open_total)) and standing.pending:
        return min(standing.pending)  # held only while a downgrade's grace runs
    if rules.achieved(standing.open_total) < tier:
        return standing.open_end + rules.grace
    tz, kind = rules.time_zone, rules.kind
    if kind is not QualificationKind.ROLLING_12_MONTHS:
        following: Period = period_containing(standing.open_end, kind, enrolled_at, tz)
        return following[1] + rules.grace
    threshold = rules.tiers[tier].threshold
    cursor = standing.open_end
    for _ in range(_MAX_ROLLING_LOOKAHEAD):
        window: Period = period_containing(cursor, kind, enrolled_at, tz)
        if max(0, period_total(rules, buckets, *window)) < threshold:
            return window[1] + rules.grace
        cursor = window[1]
    return cursor + rules.grace


# --- the member's state ------------------------------------------------------------------


@dataclass
class MemberTiers:
    enrolled_at: datetime
    now: datetime
    buckets: dict[str, int] = field(default_factory=dict)
    closed: list[Period] = field(default_factory=list)
    announced_tier: str | None = None
    progress_sent: list[str] = field(default_factory=list)
    warnings_sent: list[str] = field(default_factory=list)

    # construction and storage

    @classmethod
    def new(cls, enrolled_at: datetime) -> MemberTiers:
        at = _utc(enrolled_at)
        return cls(enrolled_at=at, now=at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "enrolled_at": self.enrolled_at.isoformat(),
            "now": self.now.isoformat(),
            "buckets": dict(sorted(self.buckets.items())),
            "closed": [[start.isoformat(), end.isoformat()] for start, end in self.closed],
            "announced_tier": self.announced_tier,
            "progress_sent": list(self.progress_sent),
            "warnings_sent": list(self.warnings_sent),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemberTiers:
        enrolled_at = _parse(d["enrolled_at"])
        return cls(
            enrolled_at=enrolled_at,
            now=_parse(d["now"]) if d.get("now") else enrolled_at,
            buckets={str(k): int(v) for k, v in (d.get("buckets") or {}).items()},
            closed=[(_parse(s), _parse(e)) for s, e in d.get("closed") or []],
            announced_tier=d.get("announced_tier"),
            progress_sent=[str(k) for k in d.get("progress_sent") or []],
            warnings_sent=[str(k) for k in d.get("warnings_sent") or []],
        )

    # derived

    def standing(self, rules: TierRules, now: datetime | None = None) -> Standing:
        at = self.now if now is None else max(self.now, _utc(now))
        return fold(rules, self.enrolled_at, self.buckets, self.closed, at)

    def next_check_at(self, rules: TierRules | None) -> datetime | None:
        if rules is None or not rules.tiers:
            return None
        st = self.standing(rules)
        candidates = list(st.pending)
        if self._warning_due_at(rules, st) is not None:
            candidates.append(st.open_end - timedelta(days=rules.downgrade_warning_days))
        return min(candidates) if candidates else None

    def view(self, rules: TierRules, now: datetime) -> TierView:
        at = max(self.now, _utc(now))
        if not rules.tiers:
            start, end = period_containing(at, rules.kind, self.enrolled_at, rules.time_zone)
            total = max(0, period_total(rules, self.buckets, start, end))
            return TierView(None, None, total, start, end, None, None, None)
        st = fold(rules, self.enrolled_at, self.buckets, self.closed, at)
        top = st.tier == len(rules.tiers) - 1
        return TierView(
            tier=rules.tiers[st.tier].name,
            valid_until=valid_until(rules, self.buckets, self.enrolled_at, st),
            qualifying_points=st.open_total,
            period_start=st.open_start,
            period_end=st.open_end,
            next_tier=None if top else rules.tiers[st.tier + 1].name,
            points_to_next=None if top else rules.tiers[st.tier + 1].threshold - st.open_total,
            projected_tier=rules.tiers[st.projected].name,
        )

    # facts in

    def enrol(self, rules: TierRules | None, at: datetime) -> list[TierEvent]:
        self._advance(at)
        return self._announce(rules, _utc(at), "enrol")

    def qualifying_changed(
        self, rules: TierRules | None, month: str, delta: int, at: datetime
    ) -> list[TierEvent]:
        self._advance(at)
        before = self.standing(rules) if rules is not None and rules.tiers else None
        self.buckets[month] = self.buckets.get(month, 0) + int(delta)
        events = self._announce(rules, _utc(at), "delta", before)
        if rules is not None and rules.tiers:
            events.extend(self._progress(rules, _utc(at)))
        return events

    def period_ended(
        self, rules: TierRules | None, start: datetime, end: datetime, at: datetime
    ) -> list[TierEvent]:
        period = (_utc(start), _utc(end))
        if period not in self.closed:
            self.closed.append(period)
            self.closed.sort(key=lambda p: (p[1], p[0]))
        self._advance(period[1])
        self._advance(at)
        return self._announce(rules, _utc(at), "period")

    def evaluate(self, rules: TierRules | None, at: datetime) -> list[TierEvent]:
        self._advance(at)
        return self._announce(rules, _utc(at), "evaluate")

    def tick(self, rules: TierRules | None, now: datetime) -> list[TierEvent]:
        self._advance(now)
        events = self._announce(rules, _utc(now), "tick")
        if rules is not None and rules.tiers:
            events.extend(self._warning(rules))
        return events

    # internals

    def _advance(self, at: datetime) -> None:
        self.now = max(self.now, _utc(at))

    def _announce(
        self, rules: TierRules | None, at: datetime, cause: _Cause, before: Standing | None = None
    ) -> list[TierEvent]:
        if rules is None or not rules.tiers:
            return []
        st = self.standing(rules)
        current = rules.tiers[st.tier].name
        if current == self.announced_tier:
            return []
        previous = rules.rank(self.announced_tier)
        rose = previous is None or st.tier > previous
        occurred_at = at
        if self.announced_tier is None:
            reason = ENROLLED
        elif cause == "evaluate" or previous is None:
            reason = REEVALUATED
        elif cause == "delta":
            fold_moved = before is not None and (
                before.held != st.held or before.entering != st.entering
            )
            reason = QUALIFIED if rose and not fold_moved else REEVALUATED
        elif rose:
            reason = QUALIFIED
        else:
            reason = REQUALIFICATION_MISSED
            if st.held_since is not None:
                occurred_at = st.held_since
        event = TierChanged(
            occurred_at=occurred_at,
            from_tier=self.announced_tier,
            to_tier=current,
            reason=reason,
            valid_until=valid_until(rules, self.buckets, self.enrolled_at, st),
            qualifying_points=st.open_total,
        )
        self.announced_tier = current
        return [event]

    def _progress(self, rules: TierRules, at: datetime) -> list[TierEvent]:
        st = self.standing(rules)
        if st.tier >= len(rules.tiers) - 1:
            return []
        current, upcoming = rules.tiers[st.tier], rules.tiers[st.tier + 1]
        to_next = upcoming.threshold - st.open_total
        if to_next <= 0 or Decimal(to_next) > rules.progress_share * upcoming.threshold:
            return []
        key = f"{st.open_start.isoformat()}|{upcoming.name}"
        if key in self.progress_sent:
            return []
        self.progress_sent.append(key)
        return [
            TierProgress(
                occurred_at=at,
                current_tier=current.name,
                next_tier=upcoming.name,
                qualifying_points=st.open_total,
                points_to_next=to_next,
                period_end=st.open_end,
            )
        ]

    def _warning_due_at(self, rules: TierRules, st: Standing) -> datetime | None:
        """When the open period's downgrade warning is due, if one is to be sent."""
        if rules.downgrade_warning_days <= 0 or st.projected >= st.tier:
            return None
        if st.open_start.isoformat() in self.warnings_sent:
            return None
        return st.open_end - timedelta(days=rules.downgrade_warning_days)

    def _warning(self, rules: TierRules) -> list[TierEvent]:
        st = self.standing(rules)
        due = self._warning_due_at(rules, st)
        if due is None or self.now < due:
            return []
        self.warnings_sent.append(st.open_start.isoformat())
        return [
            TierDowngradeWarning(
                occurred_at=due,
                current_tier=rules.tiers[st.tier].name,
                expected_tier=rules.tiers[st.projected].name,
                qualifying_points=st.open_total,
                points_needed=rules.tiers[st.tier].threshold - st.open_total,
                period_end=st.open_end,
                downgrade_at=st.open_end + rules.grace,
            )
        ]


__all__ = [
    "ENROLLED",
    "QUALIFIED",
    "REEVALUATED",
    "REQUALIFICATION_MISSED",
    "MemberTiers",
    "Standing",
    "Tier",
    "TierChanged",
    "TierDowngradeWarning",
    "TierEvent",
    "TierProgress",
    "TierRules",
    "TierView",
    "fold",
    "valid_until",
]
