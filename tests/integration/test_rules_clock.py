"""The rules service's clock end to end: points-expiring warnings that agree with the
ledger's own `expiring` list when debt took points, and birthdays the clock jumped over.

Real processes: the ledger API, the relay, `loyalty follow` and `rules serve`. Clock
runs use the program's own key, so they act on that program alone; dates in the future
are allowed because the services run with LOYALTY_ENV=dev.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from loyalty_common.proto.loyalty.rules.v1 import campaigns_pb2
from loyalty_common.testing import eventually

from tests.integration.conftest import Program, RulesProcess, earn, enrol, idem, new_program
from tests.integration.test_rules import rules_client, topic_events

pytestmark = pytest.mark.usefixtures("relay", "follow")

CAMPAIGNS = "loyalty.campaigns.events.v1"


@pytest.fixture
def club(database_url: str, ledger_url: str) -> Program:
    return new_program(database_url, ledger_url, "Clock Club")


async def _applied(dsn: str, event_ids: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchval(
            "SELECT count(DISTINCT event_id) FROM consumer_inbox WHERE event_id = ANY($1)",
            event_ids,
        )
    finally:
        await conn.close()
    return int(found)


def caught_up(api: httpx.Client, rules: RulesProcess, members: list[str]) -> None:
    """Wait until the rules service has applied every ledger event of these members."""
    ids = [
        e["event_id"]
        for m in members
        for e in api.get(f"/v1/members/{m}/events", params={"limit": 1000}).json()["events"]
    ]
    eventually(
        lambda: asyncio.run(_applied(rules.database_url, ids)) == len(ids),
        what="the rules service to apply the members' ledger events",
    )


def run_clock(rules_api: httpx.Client, as_of: datetime) -> dict[str, Any]:
    ran = rules_api.post("/v1/clock/run", json={"as_of": as_of.isoformat()})
    assert ran.status_code == 200, ran.text
    assert "skipped" not in ran.json(), ran.text
    return dict(ran.json())


def _post(api: httpx.Client, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.post(path, json=body or {}, headers=idem())
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _debt_members(api: httpx.Client, now: datetime) -> dict[str, str]:
    """Four members whose debt takes points from a lot, as the name says."""
    early, late = (now - timedelta(days=20)).isoformat(), (now - timedelta(days=19)).isoformat()
    pending = (now - timedelta(days=1)).isoformat()
    members = {name: enrol(api) for name in ("earn_part", "earn_all", "pend_part", "pend_all")}
    first = {name: earn(api, m, "1000.00", occurred_at=early) for name, m in members.items()}
    for name in ("pend_part", "pend_all"):  # pending when the debt is recorded
        assert earn(api, members[name], "300.00", occurred_at=pending)["status"] == "pending"
    spent = {"earn_part": 900, "earn_all": 1000, "pend_part": 200, "pend_all": 1000}
    for name, points in spent.items():
        _post(api, f"/v1/members/{members[name]}/redeem", {"points": points})
        refund = _post(api, f"/v1/transactions/{first[name]['transaction_id']}/reverse")
        assert refund["debt_recorded"] == points
    assert earn(api, members["earn_part"], "1000.00", occurred_at=late)["debt_paid"] == 900
    assert earn(api, members["earn_all"], "500.00", occurred_at=late)["debt_paid"] == 500
    return members


def test_expiry_warnings_leave_out_what_paid_debt_as_the_ledgers_balance_does(
    club: Program, rules: RulesProcess, kafka_bootstrap: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with club.client() as api, rules_client(club, rules) as rules_api:
        config = api.get("/v1/program").json()
        document = {k: v for k, v in config.items() if k not in ("program_id", "version")}
        put = api.put("/v1/program", json={**document, "pending_days": 14}, headers=idem())
        assert put.status_code == 200, put.text
        triggers = rules_api.put("/v1/triggers", json={"points_expiring": {"days_before": 30}})
        assert triggers.status_code == 200, triggers.text
        members = _debt_members(api, now)
        # The ledger's clock activates the pending points, which pay the debt first.
        activated = api.post(
            "/v1/ops/clock", params={"as_of": (now + timedelta(days=14)).isoformat()}
        )
        assert activated.json()["events"].get("PendingPointsActivated") == 2, activated.text
        caught_up(api, rules, list(members.values()))

        # Every lot (24 months' lifetime) expires inside the next 30 days from here.
        as_of = now + timedelta(days=730 - 25)
        ran = run_clock(rules_api, as_of)
        zone = ZoneInfo(config["time_zone"])
        ledger: dict[str, dict[str, int]] = {}
        for name, member in members.items():
            balance = api.get(f"/v1/members/{member}/balance", params={"as_of": as_of.isoformat()})
            ledger[name] = {e["date"]: e["points"] for e in balance.json()["expiring"]}
        assert ran["expiry_warnings"] == 2  # the lots debt consumed whole give none

        by_member = {member: name for name, member in members.items()}

        def warnings() -> list[Any]:
            events = topic_events(kafka_bootstrap, CAMPAIGNS, campaigns_pb2.CampaignEvent)
            mine = [e for e in events if e.type == "PointsExpiring" and e.member_id in by_member]
            return mine if len(mine) >= 2 else []

        warned: dict[str, dict[str, int]] = {name: defaultdict(int) for name in members}
        for event in eventually(warnings, what="the PointsExpiring events"):
            at = event.points_expiring.expires_at.ToDatetime(tzinfo=UTC).astimezone(zone)
            warned[by_member[event.member_id]][at.date().isoformat()] += (
                event.points_expiring.points
            )
    assert {name: dict(dates) for name, dates in warned.items()} == ledger
    assert [sum(ledger[name].values()) for name in members] == [100, 0, 100, 0]


def _birthday_rewards(rules_api: httpx.Client, member: str) -> list[str]:
    response = rules_api.get("/v1/rewards", params={"member_id": member})
    assert response.status_code == 200, response.text
    return sorted(
        r["command_id"]
        for r in response.json()["rewards"]
        if r["command_id"].startswith("birthday")
    )


def _next_common_year(after: int) -> int:
    year = after + 1
    while year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        year += 1
    return year


def test_a_birthday_the_clock_jumped_over_is_rewarded_late_once_a_year(
    club: Program, rules: RulesProcess
) -> None:
    year = _next_common_year(datetime.now(UTC).year)
    with club.client() as api, rules_client(club, rules) as rules_api:
        triggers = rules_api.put("/v1/triggers", json={"birthday": {"points": 100}})
        assert triggers.status_code == 200, triggers.text
        june = enrol(api, birthday="1990-06-15", time_zone="America/Los_Angeles")
        leap = enrol(api, birthday="1992-02-29", time_zone="Europe/Oslo")
        caught_up(api, rules, [june, leap])

        def at(month: int, day: int, hour: int, in_year: int = year) -> dict[str, Any]:
            return run_clock(rules_api, datetime(in_year, month, day, hour, tzinfo=UTC))

        # 29 February counts on 28 February in a common year; the clock skipped that day.
        assert at(2, 27, 12)["birthday_rewards"] == 0
        assert at(3, 1, 12)["birthday_rewards"] == 1
        assert _birthday_rewards(rules_api, leap) == [f"birthday:{leap}:{year}"]

        assert at(6, 14, 12)["birthday_rewards"] == 0
        # 06:00 UTC on the 15th is still the 14th in Los Angeles.
        assert at(6, 15, 6)["birthday_rewards"] == 0
        assert _birthday_rewards(rules_api, june) == []
        # The clock's next run is on the 17th: the 15th is rewarded then, late.
        assert at(6, 17, 12)["birthday_rewards"] == 1
        assert _birthday_rewards(rules_api, june) == [f"birthday:{june}:{year}"]
        # Later runs, and a run for an earlier moment, find it done.
        assert at(6, 18, 12)["birthday_rewards"] == 0
        assert at(6, 15, 20)["birthday_rewards"] == 0
        assert at(12, 31, 12)["birthday_rewards"] == 0

        # Next year, once again, even when the clock skips the day again.
        assert at(6, 10, 12, year + 1)["birthday_rewards"] == 1  # the leap-day member's
        assert at(6, 20, 12, year + 1)["birthday_rewards"] == 1
        assert _birthday_rewards(rules_api, june) == [
            f"birthday:{june}:{year}",
            f"birthday:{june}:{year + 1}",
        ]
        done = eventually(
            lambda: api.get(f"/v1/members/{june}/balance").json()["available"] == 200,
            what="both birthday rewards at the ledger",
        )
        assert done


def test_a_birthday_before_the_member_enrolled_is_not_rewarded_late(
    club: Program, rules: RulesProcess
) -> None:
    now = datetime.now(UTC)
    before = now - timedelta(days=10)
    if (before.month, before.day) == (2, 29):  # pragma: no cover - a leap day's run
        before -= timedelta(days=1)
    with club.client() as api, rules_client(club, rules) as rules_api:
        triggers = rules_api.put("/v1/triggers", json={"birthday": {"points": 100}})
        assert triggers.status_code == 200, triggers.text
        run_clock(rules_api, now - timedelta(days=20))  # the clock, then down until now
        birthdays = {"joined_after": before.date(), "today": now.date()}
        members = {
            name: enrol(api, birthday=day.replace(year=1990).isoformat(), time_zone="UTC")
            for name, day in birthdays.items()
            if (day.month, day.day) != (2, 29)
        }
        caught_up(api, rules, list(members.values()))
        run_clock(rules_api, now)
        assert _birthday_rewards(rules_api, members["joined_after"]) == []
        if "today" in members:
            rewarded = _birthday_rewards(rules_api, members["today"])
            assert rewarded == [f"birthday:{members['today']}:{now.year}"]


def test_a_late_birthday_coupon_is_valid_for_its_days_from_when_it_is_given(
    club: Program, rules: RulesProcess
) -> None:
    year = _next_common_year(datetime.now(UTC).year)
    coupon = {"kind": "percent", "value": "10", "valid_days": 7}
    with club.client() as api, rules_client(club, rules) as rules_api:
        triggers = rules_api.put("/v1/triggers", json={"birthday": {"coupon": coupon}})
        assert triggers.status_code == 200, triggers.text
        member = enrol(api, birthday="1990-03-10", time_zone="UTC")
        caught_up(api, rules, [member])
        assert run_clock(rules_api, datetime(year, 3, 9, 12, tzinfo=UTC))["birthday_rewards"] == 0
        # Down for three weeks, longer than the coupon's seven days.
        given = datetime(year, 3, 31, 12, tzinfo=UTC)
        assert run_clock(rules_api, given)["birthday_rewards"] == 1

        def coupons() -> list[dict[str, Any]]:
            found = api.get(f"/v1/members/{member}/coupons").json()["coupons"]
            return list(found)

        eventually(lambda: len(coupons()) == 1, what="the birthday coupon at the ledger")
        [issued] = coupons()
        assert datetime.fromisoformat(issued["valid_from"]) == given
        assert datetime.fromisoformat(issued["valid_until"]) == given + timedelta(days=7)
