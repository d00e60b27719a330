"""Past balances over HTTP (ADR 0018): never negative, and reproducible with known_at."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx

from tests.integration.conftest import earn, enrol, idem


def balance(api: httpx.Client, member: str, **params: datetime) -> dict[str, object]:
    response = api.get(
        f"/v1/members/{member}/balance", params={k: v.isoformat() for k, v in params.items()}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_a_late_purchase_never_pays_debt_before_the_refund(api: httpx.Client) -> None:
    config = api.get("/v1/program").json()
    document = {k: v for k, v in config.items() if k not in ("program_id", "version")}
    document["return_policy"] = "debt"
    assert api.put("/v1/program", json=document, headers=idem()).status_code == 200
    member = enrol(api)
    bought = earn(api, member, "100", occurred_at=datetime.now(UTC).isoformat())
    spent = api.post(f"/v1/members/{member}/redeem", json={"points": 100}, headers=idem())
    assert spent.status_code == 201, spent.text
    bought_late = datetime.now(UTC)
    time.sleep(0.05)
    refund = api.post(f"/v1/transactions/{bought['transaction_id']}/reverse", headers=idem())
    assert refund.status_code == 201, refund.text
    assert refund.json()["debt_recorded"] == 100
    refunded = datetime.now(UTC)
    # An offline till reports a purchase made before the refund.
    late = earn(api, member, "80", occurred_at=bought_late.isoformat())
    assert late["balance"]["debt"] == 20
    # known_at=now reads the history even for a moment seconds ago.
    now = datetime.now(UTC)
    between = balance(api, member, as_of=bought_late + timedelta(milliseconds=10), known_at=now)
    assert (between["available"], between["debt"]) == (80, 0)
    after = balance(api, member, as_of=refunded, known_at=now)
    assert (after["available"], after["debt"]) == (0, 20)


def test_known_at_answers_as_the_ledger_did_then(api: httpx.Client) -> None:
    member = enrol(api)
    earn(api, member, "100", occurred_at=datetime.now(UTC).isoformat())
    sale = datetime.now(UTC)
    time.sleep(0.02)
    month_end = datetime.now(UTC)
    time.sleep(0.02)
    closed = datetime.now(UTC)
    time.sleep(0.02)
    # A purchase before the month end, reported after the books were closed.
    earn(api, member, "50", occurred_at=sale.isoformat())
    then = balance(api, member, as_of=month_end, known_at=closed)
    assert then["available"] == 100
    assert then["known_at"] == closed.isoformat()
    now = datetime.now(UTC)
    assert balance(api, member, as_of=month_end, known_at=now)["available"] == 150
    # known_at alone: today's balance as it stood when the books were closed.
    assert balance(api, member, known_at=closed)["available"] == 100


def test_known_at_in_the_future_or_before_enrolment(api: httpx.Client) -> None:
    before = datetime.now(UTC) - timedelta(seconds=30)
    member = enrol(api)
    future = api.get(
        f"/v1/members/{member}/balance",
        params={"known_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
    )
    assert future.status_code == 422
    assert future.json()["code"] == "known_at_in_future"
    unknown = api.get(f"/v1/members/{member}/balance", params={"known_at": before.isoformat()})
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "member_not_found"
