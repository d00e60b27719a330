"""Every route of the rules service keeps programs apart: program B's key on program
A's resources is a 404 (a list shows none of A's) and changes nothing of A's.

The routes are read from the app itself, so a new route without a case here fails
`test_every_route_has_a_cross_program_case`. B's requests also name A in
`X-Loyalty-Program`, which a program key must not be able to use to cross over.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from loyalty_common.testing import eventually
from rules.config import RulesSettings
from rules.entrypoints.api import create_app

from tests.integration.conftest import Program, RulesProcess, earn, enrol, new_program
from tests.integration.test_rules import rules_client, tier_of
from tests.integration.test_rules_clock import caught_up, run_clock

pytestmark = pytest.mark.usefixtures("relay", "follow")

Route = tuple[str, str]


def app_routes(app: Any) -> set[Route]:
    return {
        (method, route.path)
        for route in app.routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }


def _rules_app() -> Any:
    settings = RulesSettings.model_validate(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "unused:9092",
            "RULES_LEDGER_KEY": "unused",
            "LOG_LEVEL": "WARNING",
        }
    )
    return create_app(settings, "postgresql://unused/unused")


APP = _rules_app()
ROUTES = sorted(app_routes(APP))
# FastAPI's own documentation routes: the same for every caller, no key.
DOCUMENTATION: set[Route] = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
# Routes that take no key and serve nothing of any program's.
EXEMPT: set[Route] = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}


def _celebration_day() -> datetime:
    """About 23 months ahead: A's member's birthday, with A's lot expiring a few weeks
    later (24 months' lifetime), so one clock run finds both."""
    day = (datetime.now(UTC) + timedelta(days=715)).replace(hour=12, minute=0, second=0)
    return day + timedelta(days=1) if (day.month, day.day) == (2, 29) else day


@dataclass
class Tenants:
    a: Program
    b: Program
    a_rules: httpx.Client  # A's admin key (A's view of its own data)
    b_rules: httpx.Client  # B's admin key, naming A in X-Loyalty-Program
    member: str
    bonus_id: str
    offer_id: str
    card_id: str
    celebration: datetime

    def snapshot(self) -> dict[str, Any]:
        """Everything of A's that the rules API shows A."""
        gets = [
            f"/v1/members/{self.member}/tier",
            f"/v1/members/{self.member}/tier/history",
            f"/v1/members/{self.member}/punch-cards",
            "/v1/campaigns",
            f"/v1/campaigns/{self.bonus_id}",
            f"/v1/campaigns/{self.offer_id}",
            f"/v1/campaigns/{self.bonus_id}/stats",
            f"/v1/campaigns/{self.offer_id}/stats",
            "/v1/triggers",
            "/v1/punch-cards",
            "/v1/rewards",
        ]
        return {path: self.a_rules.get(path).json() for path in gets}


A_TRIGGERS = {
    "welcome": {"points": 50},
    "birthday": {"points": 100},
    "points_expiring": {"days_before": 30},
}
BONUS = {
    "name": "A's double points",
    "multiplier": "2",
    "starts_at": "2026-01-01T00:00:00Z",
    "ends_at": "2026-01-02T00:00:00Z",
}
CARD = {"name": "A's 8th bag", "category": "dog_food", "size": 8, "reward": {"points": 500}}
DOG_FOOD = {"sku": "dog-food-12kg", "category": "dog_food", "quantity": 1, "amount": "500"}


def _offer(name: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "name": name,
        "coupon": {
            "kind": "percent",
            "value": "10",
            "valid_from": now.isoformat(),
            "valid_until": (now + timedelta(days=30)).isoformat(),
        },
        "segment": {"kind": "tier", "tiers": ["Bronze"]},
    }


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _settled(t: Tenants) -> bool:
    stats = t.a_rules.get(f"/v1/campaigns/{t.offer_id}/stats").json()
    rewards = t.a_rules.get("/v1/rewards").json()["rewards"]
    cards = t.a_rules.get(f"/v1/members/{t.member}/punch-cards").json()["punch_cards"]
    return (
        stats["issued"] == 1
        and bool(rewards)
        and all(r["status"] == "done" for r in rewards)
        and [c["punches"] for c in cards] == [1]
    )


@pytest.fixture(scope="module")
def tenants(database_url: str, ledger_url: str, rules: RulesProcess) -> Iterator[Tenants]:
    a = new_program(database_url, ledger_url, "Program A")
    b = new_program(database_url, ledger_url, "Program B")
    celebration = _celebration_day()
    with (
        a.client() as api,
        rules_client(a, rules) as a_rules,
        httpx.Client(
            base_url=rules.url,
            timeout=30,
            headers={"Authorization": f"Bearer {b.admin_key}", "X-Loyalty-Program": a.program_id},
        ) as b_rules,
    ):
        _created(a_rules.put("/v1/triggers", json=A_TRIGGERS))
        bonus = _created(
            a_rules.post("/v1/campaigns/bonus", json=BONUS, headers={"Idempotency-Key": "bonus"})
        )
        card = _created(
            a_rules.post("/v1/punch-cards", json=CARD, headers={"Idempotency-Key": "card"})
        )
        birthday = celebration.date().replace(year=1990).isoformat()
        member = enrol(api, birthday=birthday, time_zone="UTC")
        earn(api, member, "500.00", lines=[DOG_FOOD])
        eventually(lambda: tier_of(a_rules, member), what="A's member at rules")
        offer = _created(
            a_rules.post(
                "/v1/campaigns/offers",
                json=_offer("A's offer"),
                headers={"Idempotency-Key": "offer"},
            )
        )
        caught_up(api, rules, [member])
        t = Tenants(
            a,
            b,
            a_rules,
            b_rules,
            member,
            bonus["campaign_id"],
            offer["campaign_id"],
            card["card_id"],
            celebration,
        )
        eventually(lambda: _settled(t), what="A's rewards, coupon and punch")
        yield t


# -- one case per route: B's request, and what B must (not) see -----------------------


def _not_found(response: httpx.Response, code: str) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def _tier(t: Tenants) -> None:
    _not_found(t.b_rules.get(f"/v1/members/{t.member}/tier"), "member_not_found")


def _tier_history(t: Tenants) -> None:
    _not_found(t.b_rules.get(f"/v1/members/{t.member}/tier/history"), "member_not_found")


def _create_bonus(t: Tenants) -> None:
    # A's Idempotency-Key, another body: B's own new campaign, not A's nor a 422.
    created = t.b_rules.post(
        "/v1/campaigns/bonus",
        json={**BONUS, "name": "B's bonus"},
        headers={"Idempotency-Key": "bonus"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["campaign_id"] != t.bonus_id


def _create_offer(t: Tenants) -> None:
    created = t.b_rules.post(
        "/v1/campaigns/offers", json=_offer("B's offer"), headers={"Idempotency-Key": "offer"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["campaign_id"] != t.offer_id
    assert created.json()["targeted"] == 0  # A's Bronze member is not B's


def _list_campaigns(t: Tenants) -> None:
    listed = t.b_rules.get("/v1/campaigns")
    assert listed.status_code == 200, listed.text
    ids = {c["campaign_id"] for c in listed.json()["campaigns"]}
    assert not ids & {t.bonus_id, t.offer_id}


def _get_campaign(t: Tenants) -> None:
    _not_found(t.b_rules.get(f"/v1/campaigns/{t.bonus_id}"), "campaign_not_found")


def _cancel_campaign(t: Tenants) -> None:
    _not_found(t.b_rules.post(f"/v1/campaigns/{t.bonus_id}/cancel"), "campaign_not_found")


def _campaign_stats(t: Tenants) -> None:
    _not_found(t.b_rules.get(f"/v1/campaigns/{t.offer_id}/stats"), "campaign_not_found")


def _put_triggers(t: Tenants) -> None:
    _created(t.b_rules.put("/v1/triggers", json={"welcome": {"points": 1}}))


def _get_triggers(t: Tenants) -> None:
    found = t.b_rules.get("/v1/triggers")
    assert found.status_code == 200, found.text
    assert found.json() in ({}, {"welcome": {"points": 1}})


def _create_punch_card(t: Tenants) -> None:
    created = t.b_rules.post(
        "/v1/punch-cards", json={**CARD, "size": 5}, headers={"Idempotency-Key": "card"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["card_id"] != t.card_id


def _list_punch_cards(t: Tenants) -> None:
    listed = t.b_rules.get("/v1/punch-cards")
    assert listed.status_code == 200, listed.text
    assert t.card_id not in {c["card_id"] for c in listed.json()["punch_cards"]}


def _retire_punch_card(t: Tenants) -> None:
    _not_found(t.b_rules.post(f"/v1/punch-cards/{t.card_id}/retire"), "punch_card_not_found")


def _member_punch_cards(t: Tenants) -> None:
    found = t.b_rules.get(f"/v1/members/{t.member}/punch-cards")
    assert found.status_code == 200, found.text
    assert found.json()["punch_cards"] == []


def _rewards(t: Tenants) -> None:
    for params in ({"member_id": t.member}, {}):
        listed = t.b_rules.get("/v1/rewards", params=params)
        assert listed.status_code == 200, listed.text
        assert t.member not in {r["member_id"] for r in listed.json()["rewards"]}


def _clock(t: Tenants) -> None:
    # A's member's birthday, with A's lot expiring within 30 days and A's tier checks
    # due: B's run finds nothing of A's to do.
    ran = run_clock(t.b_rules, t.celebration)
    assert (ran["tier_checks"], ran["birthday_rewards"], ran["expiry_warnings"]) == (0, 0, 0)


CASES: dict[Route, Callable[[Tenants], None]] = {
    ("GET", "/v1/members/{member_id}/tier"): _tier,
    ("GET", "/v1/members/{member_id}/tier/history"): _tier_history,
    ("POST", "/v1/campaigns/bonus"): _create_bonus,
    ("POST", "/v1/campaigns/offers"): _create_offer,
    ("GET", "/v1/campaigns"): _list_campaigns,
    ("GET", "/v1/campaigns/{campaign_id}"): _get_campaign,
    ("POST", "/v1/campaigns/{campaign_id}/cancel"): _cancel_campaign,
    ("GET", "/v1/campaigns/{campaign_id}/stats"): _campaign_stats,
    ("PUT", "/v1/triggers"): _put_triggers,
    ("GET", "/v1/triggers"): _get_triggers,
    ("POST", "/v1/punch-cards"): _create_punch_card,
    ("GET", "/v1/punch-cards"): _list_punch_cards,
    ("POST", "/v1/punch-cards/{card_id}/retire"): _retire_punch_card,
    ("GET", "/v1/members/{member_id}/punch-cards"): _member_punch_cards,
    ("GET", "/v1/rewards"): _rewards,
    ("POST", "/v1/clock/run"): _clock,
}


def test_every_route_has_a_cross_program_case() -> None:
    assert set(ROUTES) - DOCUMENTATION - EXEMPT == set(CASES)


@pytest.mark.parametrize(
    "route", [r for r in ROUTES if r not in DOCUMENTATION | EXEMPT], ids=" ".join
)
def test_another_programs_key_neither_sees_nor_changes_a_programs_data(
    tenants: Tenants, route: Route
) -> None:
    before = tenants.snapshot()
    CASES[route](tenants)
    assert tenants.snapshot() == before


def test_a_clock_run_acts_for_its_keys_program_alone(
    database_url: str, ledger_url: str, rules: RulesProcess
) -> None:
    """The other side of `_clock`: the same run with A's own key does reward A."""
    a = new_program(database_url, ledger_url, "Clock A")
    b = new_program(database_url, ledger_url, "Clock B")
    day = datetime(datetime.now(UTC).year + 1, 8, 20, 12, tzinfo=UTC)
    with a.client() as api, rules_client(a, rules) as a_rules, rules_client(b, rules) as b_rules:
        for rules_api in (a_rules, b_rules):
            _created(rules_api.put("/v1/triggers", json={"birthday": {"points": 100}}))
        member = enrol(api, birthday="1990-08-20", time_zone="UTC")
        caught_up(api, rules, [member])
        assert run_clock(b_rules, day)["birthday_rewards"] == 0
        assert a_rules.get("/v1/rewards", params={"member_id": member}).json()["rewards"] == []
        assert run_clock(a_rules, day)["birthday_rewards"] == 1
        rewards = a_rules.get("/v1/rewards", params={"member_id": member}).json()["rewards"]
        assert [r["command_id"] for r in rewards] == [f"birthday:{member}:{day.year}"]


def test_another_programs_id_is_answered_as_an_unknown_one(tenants: Tenants) -> None:
    """B cannot tell A's ids from ids that no program has."""
    unknown = str(uuid.uuid4())
    for path, theirs in [
        ("/v1/members/{}/tier", tenants.member),
        ("/v1/campaigns/{}", tenants.bonus_id),
        ("/v1/punch-cards/{}/retire", tenants.card_id),
    ]:
        method = "POST" if path.endswith("retire") else "GET"
        answers = [tenants.b_rules.request(method, path.format(some)) for some in (unknown, theirs)]
        assert {(a.status_code, a.json()["code"], a.json()["detail"]) for a in answers} == {
            (answers[0].status_code, answers[0].json()["code"], answers[0].json()["detail"])
        }
