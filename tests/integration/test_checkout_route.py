"""The checkout's routes (CheckoutRoute, ADR 0016) answer exactly as FastAPI's own
handler would: the same request, sent to the running ledger and to an app whose
checkout routes use FastAPI's handler, gets the same status and the same problem."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from ledger.config import LedgerSettings
from ledger.entrypoints import api as ledger_api

from tests.integration.conftest import Program, earn, enrol, purchase


@pytest.fixture
def standard(database_url: str) -> FastAPI:
    """The ledger app with FastAPI's own handler on every route."""
    patch = pytest.MonkeyPatch()
    patch.setattr(ledger_api.CheckoutRoute, "__init__", APIRoute.__init__)
    patch.setenv("LOYALTY_ENV", "dev")
    try:
        return ledger_api.create_app(
            LedgerSettings(database_url=database_url, clock_interval_seconds=0)
        )
    finally:
        patch.undo()


Body = Callable[[], bytes | None]  # each call a new body: the same order twice is refused


def _fixed(content: bytes | None) -> Body:
    return lambda: content


def _purchase(**fields: Any) -> Body:
    return lambda: json.dumps({**purchase(), **fields}).encode()


def _cases(member: str) -> list[tuple[str, str, dict[str, str], Body]]:
    earn_path = f"/v1/members/{member}/earn"
    as_json = {"Content-Type": "application/json"}
    none = _fixed(None)
    return [
        ("POST", earn_path, as_json, _purchase()),
        ("POST", earn_path, {"Content-Type": "application/json; charset=utf-8"}, _purchase()),
        ("POST", earn_path, {"Content-Type": "application/vnd.till+json"}, _purchase()),
        ("POST", earn_path, {}, _purchase()),  # no content type
        ("POST", earn_path, {"Content-Type": "text/plain"}, _purchase()),
        ("POST", earn_path, as_json, _fixed(b'{"order_id": ')),
        ("POST", earn_path, as_json, _fixed(b"[]")),
        ("POST", earn_path, as_json, _fixed(b"")),
        ("POST", earn_path, as_json, _purchase(colour="red")),
        ("POST", earn_path, as_json, _purchase(amount="12,50")),
        ("POST", earn_path, as_json, _purchase(currency="XXX")),
        ("POST", earn_path, as_json, _fixed(b'{"points": 10, "reason": "goodwill"}')),  # needs ops
        ("POST", "/v1/members/not-a-uuid/earn", as_json, _purchase()),
        ("POST", "/v1/members/not-a-uuid/earn", as_json, _fixed(b"{")),
        ("POST", f"/v1/members/{uuid.uuid4()}/earn", as_json, _purchase()),
        ("POST", "/v1/cards/no-such-card/earn", as_json, _purchase()),
        ("POST", f"/v1/members/{member}/redeem", as_json, _fixed(b'{"points": 1000000}')),
        ("POST", f"/v1/members/{member}/redeem", as_json, _fixed(b'{"points": -1}')),
        ("POST", f"/v1/transactions/{uuid.uuid4()}/reverse", {}, none),
        ("POST", f"/v1/transactions/{uuid.uuid4()}/reverse", as_json, _fixed(b"{}")),
        ("POST", f"/v1/transactions/{uuid.uuid4()}/reverse", as_json, _fixed(b"{]")),
        ("POST", "/v1/transactions/42/reverse", {}, none),
        ("GET", f"/v1/members/{member}/balance", {}, none),
        ("GET", f"/v1/members/{member}/balance?as_of=2026-01-01T00:00:00Z", {}, none),
        ("GET", f"/v1/members/{member}/balance?as_of=yesterday", {}, none),
        ("GET", f"/v1/members/{member}/balance?as_of=", {}, none),
        ("GET", f"/v1/members/{member}/balance?as_of=2026-01-01T00:00:00", {}, none),
        ("GET", "/v1/members/not-a-uuid/balance?as_of=yesterday", {}, none),
    ]


def _answer(response: httpx.Response) -> tuple[int, Any]:
    body = response.json()
    if response.status_code < 400:
        return response.status_code, sorted(body)  # new transactions differ in their ids
    return response.status_code, body


@pytest.mark.parametrize("credentials", ["checkout key", "no key", "no Idempotency-Key"])
async def test_checkout_routes_answer_as_fastapi_does(
    program: Program, standard: FastAPI, credentials: str
) -> None:
    with program.client() as api:
        member = enrol(api)
        earn(api, member, "500")
    async with (
        standard.router.lifespan_context(standard),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=standard), base_url="http://ledger"
        ) as in_process,
        httpx.AsyncClient(base_url=program.url, timeout=30) as served,
    ):
        for method, path, headers, body in _cases(member):
            sent = dict(headers)
            if credentials != "no key":
                sent["Authorization"] = f"Bearer {program.checkout_key}"
            answers = []
            for client in (served, in_process):
                if credentials != "no Idempotency-Key":
                    sent["Idempotency-Key"] = str(uuid.uuid4())
                response = await client.request(method, path, headers=sent, content=body())
                answers.append(_answer(response))
            assert answers[0] == answers[1], (method, path, headers, body())
