"""Every route of the notifier keeps programs apart: program B's key on program A's
resources is a 404 (a list shows none of A's) and changes nothing of A's.

The routes are read from the app itself, so a new route without a case here fails
`test_every_route_has_a_cross_program_case`. B's requests also name A in
`X-Loyalty-Program`, which a program key must not be able to use to cross over.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from loyalty_common.testing import eventually
from notifier.config import NotifierSettings
from notifier.entrypoints.api import create_app

from tests.integration.conftest import NotifierProcess, Program, earn, enrol, new_program
from tests.integration.test_rules_tenancy import Route, app_routes

pytestmark = pytest.mark.usefixtures("relay", "follow", "rules")


def _notifier_app() -> Any:
    settings = NotifierSettings.model_validate(
        {"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "LOG_LEVEL": "WARNING"}
    )
    return create_app(settings, "postgresql://unused/unused")


APP = _notifier_app()
ROUTES = sorted(app_routes(APP))
# FastAPI's own documentation routes: the same for every caller, no key.
DOCUMENTATION: set[Route] = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
EXEMPT: set[Route] = {
    # No key and nothing of any program's.
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    # No key at all: the unsubscribe link's random token names one message.
    ("GET", "/u/{token}"),
}

TEMPLATE = "/v1/templates/TierChanged/email/en"
A_SUBJECT = "Program A: welcome to {{ to_tier }}"
A_SETTINGS = {"transactional_channels": ["email", "sms"], "marketing_per_week": 5}


@dataclass
class Tenants:
    a: Program
    b: Program
    a_notifier: httpx.Client  # A's admin key
    b_notifier: httpx.Client  # B's admin key, naming A in X-Loyalty-Program
    member: str

    def snapshot(self) -> dict[str, Any]:
        """Everything of A's that the notifier's API shows A."""
        gets = [
            f"/v1/messages?member_id={self.member}",
            "/v1/messages",
            "/v1/messages/stats",
            "/v1/settings",
            "/v1/templates",
            TEMPLATE,
        ]
        return {path: self.a_notifier.get(path).json() for path in gets}


def _settled(t: Tenants) -> bool:
    log = t.a_notifier.get("/v1/messages", params={"member_id": t.member}).json()["messages"]
    statuses = {m["status"] for m in log}
    return "sent" in statuses and "pending" not in statuses


@pytest.fixture(scope="module")
def tenants(database_url: str, ledger_url: str, notifier: NotifierProcess) -> Iterator[Tenants]:
    a = new_program(database_url, ledger_url, "Program A")
    b = new_program(database_url, ledger_url, "Program B")
    with (
        a.client() as api,
        httpx.Client(
            base_url=notifier.url, timeout=30, headers={"Authorization": f"Bearer {a.admin_key}"}
        ) as a_notifier,
        httpx.Client(
            base_url=notifier.url,
            timeout=30,
            headers={"Authorization": f"Bearer {b.admin_key}", "X-Loyalty-Program": a.program_id},
        ) as b_notifier,
    ):
        for client in (a_notifier, b_notifier):
            eventually(
                lambda c=client: c.get("/v1/settings").status_code == 200,
                what="the program at the notifier",
            )
        assert a_notifier.put("/v1/settings", json=A_SETTINGS).status_code == 200
        saved = a_notifier.put(TEMPLATE, json={"subject": A_SUBJECT})
        assert saved.status_code == 200, saved.text
        address = f"a-{uuid.uuid4().hex[:6]}@example.no"
        member = enrol(api, email=address, locale="en", consents={"email": True})
        earn(api, member, "5000.00")  # Silver: a TierChanged email
        t = Tenants(a, b, a_notifier, b_notifier, member)
        eventually(lambda: _settled(t), what="A's tier email in the delivery log")
        yield t


# -- one case per route: B's request, and what B must (not) see -----------------------


def _messages(t: Tenants) -> None:
    for params in ({"member_id": t.member}, {}):
        listed = t.b_notifier.get("/v1/messages", params=params)
        assert listed.status_code == 200, listed.text
        assert t.member not in {m["member_id"] for m in listed.json()["messages"]}


def _stats(t: Tenants) -> None:
    counted = t.b_notifier.get("/v1/messages/stats")
    assert counted.status_code == 200, counted.text
    body = counted.json()
    assert (body["sent"], body["pending"], body["failed"], body["suppressed"]) == (0, 0, 0, {})


def _get_settings(t: Tenants) -> None:
    found = t.b_notifier.get("/v1/settings")
    assert found.status_code == 200, found.text
    assert found.json()["marketing_per_week"] != A_SETTINGS["marketing_per_week"]


def _put_settings(t: Tenants) -> None:
    put = t.b_notifier.put("/v1/settings", json={"marketing_per_week": 1})
    assert put.status_code == 200, put.text


def _list_templates(t: Tenants) -> None:
    listed = t.b_notifier.get("/v1/templates")
    assert listed.status_code == 200, listed.text
    assert all("subject" not in e["overridden"] for e in listed.json()["templates"])


def _get_template(t: Tenants) -> None:
    found = t.b_notifier.get(TEMPLATE)
    assert found.status_code == 200, found.text
    assert "subject" not in found.json()["overridden"]
    assert found.json()["parts"]["subject"] != A_SUBJECT


def _put_template(t: Tenants) -> None:
    put = t.b_notifier.put(TEMPLATE, json={"text": "Program B: {{ to_tier }}"})
    assert put.status_code == 200, put.text
    assert put.json()["overridden"] == ["text"]


def _delete_template(t: Tenants) -> None:
    assert t.b_notifier.delete(TEMPLATE).status_code == 204


CASES: dict[Route, Callable[[Tenants], None]] = {
    ("GET", "/v1/messages"): _messages,
    ("GET", "/v1/messages/stats"): _stats,
    ("GET", "/v1/settings"): _get_settings,
    ("PUT", "/v1/settings"): _put_settings,
    ("GET", "/v1/templates"): _list_templates,
    ("GET", "/v1/templates/{event_type}/{channel}/{locale}"): _get_template,
    ("PUT", "/v1/templates/{event_type}/{channel}/{locale}"): _put_template,
    ("DELETE", "/v1/templates/{event_type}/{channel}/{locale}"): _delete_template,
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
