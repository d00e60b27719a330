"""The REST API end to end: real HTTP server, real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from tests.integration.conftest import Program, earn, enrol, idem, new_program, purchase


def test_healthz_needs_no_key(ledger_url: str) -> None:
    assert httpx.get(f"{ledger_url}/healthz").status_code == 200


def test_openapi_documents_each_routes_key_and_headers(ledger_url: str) -> None:
    document = httpx.get(f"{ledger_url}/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    earn = document["paths"]["/v1/members/{member_id}/earn"]["post"]
    balance = document["paths"]["/v1/members/{member_id}/balance"]["get"]
    for operation in (earn, balance):
        assert operation["security"] == [{"HTTPBearer": []}]
        assert "422" in operation["responses"]
    headers = {p["name"]: p for p in earn["parameters"] if p["in"] == "header"}
    assert list(headers) == ["Idempotency-Key", "X-Correlation-Id", "X-Causation-Id"]
    assert headers["Idempotency-Key"]["required"] is True
    assert headers["Idempotency-Key"]["schema"]["maxLength"] == 255
    assert [p["name"] for p in balance["parameters"] if p["in"] == "header"] == ["X-Correlation-Id"]
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_missing_unknown_and_underscoped_keys(program: Program) -> None:
    bare = httpx.get(f"{program.url}/v1/program")
    assert bare.status_code == 401 and bare.json()["code"] == "unauthorized"
    assert bare.headers["content-type"] == "application/problem+json"
    with program.client("lk_nope_nope") as client:
        assert client.get("/v1/program").status_code == 401
    with program.client(program.checkout_key) as client:
        denied = client.get("/v1/program")
        assert denied.status_code == 403 and denied.json()["code"] == "forbidden"


def test_earn_redeem_reverse_and_balance(api: httpx.Client) -> None:
    member = enrol(api, email="kari@example.no", consents={"email": True})
    earned = earn(api, member, "499.90")
    assert earned["points"] == 499
    assert earned["status"] == "available"
    assert earned["balance"]["available"] == 499
    assert earned["breakdown"][0]["rule"] == "base"

    redeemed = api.post(f"/v1/members/{member}/redeem", json={"points": 200}, headers=idem())
    assert redeemed.status_code == 201, redeemed.text
    assert redeemed.json()["balance"]["available"] == 299

    short = api.post(f"/v1/members/{member}/redeem", json={"points": 300}, headers=idem())
    assert short.status_code == 409
    assert short.json()["code"] == "insufficient_points" and short.json()["available"] == 299

    back = api.post(
        f"/v1/transactions/{redeemed.json()['transaction_id']}/reverse",
        json={"points": 50},
        headers=idem(),
    )
    assert back.status_code == 201, back.text
    assert back.json()["balance"]["available"] == 349

    refund = api.post(
        f"/v1/transactions/{earned['transaction_id']}/reverse",
        json={"amount": "100.00"},
        headers=idem(),
    )
    assert refund.status_code == 201, refund.text
    assert refund.json()["points"] == 99  # floor(499 * 100.00 / 499.90)

    balance = api.get(f"/v1/members/{member}/balance").json()
    assert balance["available"] == 250
    assert balance["lifetime_earned"] == 400
    assert balance["qualifying_points"] == 400
    assert balance["debt"] == 0


def test_reversal_never_exceeds_the_original(api: httpx.Client) -> None:
    member = enrol(api)
    earned = earn(api, member, "300")
    tx = earned["transaction_id"]
    assert (
        api.post(f"/v1/transactions/{tx}/reverse", json={"points": 200}, headers=idem()).status_code
        == 201
    )
    over = api.post(f"/v1/transactions/{tx}/reverse", json={"points": 101}, headers=idem())
    assert over.status_code == 409 and over.json()["code"] == "reversal_exceeds_original"
    rest = api.post(f"/v1/transactions/{tx}/reverse", headers=idem())
    assert rest.status_code == 201 and rest.json()["points"] == 100
    again = api.post(f"/v1/transactions/{tx}/reverse", headers=idem())
    assert again.status_code == 409 and again.json()["code"] == "not_reversible"


def test_debt_policy_records_shortfall_and_next_earn_pays_it(api: httpx.Client) -> None:
    member = enrol(api)
    earned = earn(api, member, "1000")
    api.post(f"/v1/members/{member}/redeem", json={"points": 900}, headers=idem())
    refund = api.post(f"/v1/transactions/{earned['transaction_id']}/reverse", headers=idem())
    assert refund.json()["debt_recorded"] == 900
    assert refund.json()["balance"] == {
        "available": 0,
        "pending": 0,
        "debt": 900,
        "lifetime_earned": 0,
    }
    paid = earn(api, member, "1000")
    assert paid["debt_paid"] == 900
    assert paid["balance"]["available"] == 100 and paid["balance"]["debt"] == 0


def test_idempotent_replay_and_key_reuse(api: httpx.Client) -> None:
    member = enrol(api)
    body = purchase("250")
    headers = idem()
    first = api.post(f"/v1/members/{member}/earn", json=body, headers=headers)
    second = api.post(f"/v1/members/{member}/earn", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    changed = api.post(
        f"/v1/members/{member}/earn", json={**body, "amount": "251"}, headers=headers
    )
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"
    duplicate = api.post(f"/v1/members/{member}/earn", json=body, headers=idem())
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "duplicate_order"
    assert api.get(f"/v1/members/{member}/balance").json()["available"] == 250


def test_other_programs_members_are_not_found(
    api: httpx.Client, database_url: str, ledger_url: str
) -> None:
    member = enrol(api)
    tx = earn(api, member)["transaction_id"]
    other = new_program(database_url, ledger_url, "Other Club")
    with other.client() as client:
        assert client.get(f"/v1/members/{member}").status_code == 404
        assert client.get(f"/v1/members/{member}/balance").json()["code"] == "member_not_found"
        assert client.post(f"/v1/transactions/{tx}/reverse", headers=idem()).status_code == 404
        assert (
            client.post(f"/v1/members/{member}/earn", json=purchase(), headers=idem()).status_code
            == 404
        )


def test_card_linked_earning(api: httpx.Client) -> None:
    member, other = enrol(api), enrol(api)
    token = f"tok_{uuid.uuid4().hex}"
    linked = api.post(f"/v1/members/{member}/cards", json={"card_token": token}, headers=idem())
    assert linked.status_code == 201 and linked.json()["cards"] == [token]
    taken = api.post(f"/v1/members/{other}/cards", json={"card_token": token}, headers=idem())
    assert taken.status_code == 409 and taken.json()["code"] == "card_linked_to_other_member"
    earned = api.post(f"/v1/cards/{token}/earn", json=purchase("80"), headers=idem())
    assert earned.status_code == 201 and earned.json()["member_id"] == member
    unknown = api.post("/v1/cards/tok_unknown_card/earn", json=purchase("80"), headers=idem())
    assert unknown.status_code == 404


def test_bonus_needs_ops_scope_and_adjust_needs_reason(program: Program) -> None:
    with program.client() as admin, program.client(program.checkout_key) as checkout:
        member = enrol(admin)
        bonus = {"points": 500, "reason": "welcome"}
        denied = checkout.post(f"/v1/members/{member}/earn", json=bonus, headers=idem())
        assert denied.status_code == 403
        granted = admin.post(f"/v1/members/{member}/earn", json=bonus, headers=idem())
        assert granted.status_code == 201 and granted.json()["qualifying_points"] == 0
        no_reason = admin.post(f"/v1/members/{member}/adjust", json={"points": -10}, headers=idem())
        assert no_reason.status_code == 422
        assert no_reason.json()["errors"][0]["field"] == "reason"
        fixed = admin.post(
            f"/v1/members/{member}/adjust",
            json={"points": -10, "reason": "double-booked bonus"},
            headers=idem(),
        )
        assert fixed.status_code == 201 and fixed.json()["balance"]["available"] == 490
        events = admin.get(f"/v1/members/{member}/events").json()["events"]
        assert events[-1]["type"] == "PointsAdjusted"
        assert events[-1]["reason"] == "double-booked bonus"


def test_pending_points_and_clock(api: httpx.Client) -> None:
    config = api.get("/v1/program").json()
    document = {k: v for k, v in config.items() if k not in ("program_id", "version")}
    document["pending_days"] = 14
    put = api.put("/v1/program", json=document, headers=idem())
    assert put.status_code == 200, put.text
    member = enrol(api)
    occurred = datetime.now(UTC) - timedelta(days=1)
    earned = earn(api, member, "300", occurred_at=occurred.isoformat())
    assert earned["status"] == "pending"
    assert earned["balance"] == {"available": 0, "pending": 300, "debt": 0, "lifetime_earned": 300}
    too_soon = api.post(f"/v1/members/{member}/redeem", json={"points": 1}, headers=idem())
    assert too_soon.status_code == 409
    as_of = (occurred + timedelta(days=14, seconds=1)).isoformat()
    first = api.post("/v1/ops/clock", params={"as_of": as_of}, headers=idem())
    assert first.status_code == 200
    assert first.json()["events"].get("PendingPointsActivated") == 1
    second = api.post("/v1/ops/clock", params={"as_of": as_of}, headers=idem())
    assert second.json()["events"] == {}
    assert api.get(f"/v1/members/{member}/balance").json()["available"] == 300


def test_expiry_and_balance_as_of(api: httpx.Client) -> None:
    member = enrol(api)
    earn(api, member, "100", occurred_at="2026-11-01T12:00:00Z")
    soon = api.get(f"/v1/members/{member}/balance", params={"as_of": "2028-10-01T00:00:00Z"}).json()
    assert soon["available"] == 100
    assert soon["expiring"] == [{"date": "2028-11-01", "points": 100}]
    after = api.get(
        f"/v1/members/{member}/balance", params={"as_of": "2028-11-02T00:00:00Z"}
    ).json()
    assert after["available"] == 0
    before = api.get(
        f"/v1/members/{member}/balance", params={"as_of": "2026-10-01T00:00:00Z"}
    ).json()
    assert before["available"] == 0


def test_bad_input_names_the_field_and_writes_nothing(api: httpx.Client) -> None:
    member = enrol(api)
    cases = {
        "amount": purchase("-5"),
        "currency": purchase(currency="nok"),
        "occurred_at": purchase(occurred_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()),
        "surprise": {**purchase(), "surprise": 1},
    }
    for field, body in cases.items():
        response = api.post(f"/v1/members/{member}/earn", json=body, headers=idem())
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert field in response.text
    malformed = api.post(f"/v1/members/{member}/earn", json=purchase("1.2.3"), headers=idem())
    assert malformed.status_code == 422 and "amount" in malformed.text
    unsupported = api.post(
        f"/v1/members/{member}/earn", json=purchase(currency="USD"), headers=idem()
    )
    assert unsupported.status_code == 422
    assert unsupported.json()["code"] == "unsupported_currency"
    huge = api.post(
        f"/v1/members/{member}/earn",
        content=b"{" + b" " * 70_000 + b"}",
        headers={**idem(), "content-type": "application/json"},
    )
    assert huge.status_code == 413 and huge.json()["code"] == "body_too_large"
    no_key = api.post(f"/v1/members/{member}/earn", json=purchase())
    assert no_key.status_code == 422 and "idempotency-key" in no_key.text.lower()
    for header, value in {
        "Idempotency-Key": "two words",
        "X-Correlation-Id": "c" * 101,
        "X-Causation-Id": "c" * 101,
    }.items():
        bad = api.post(
            f"/v1/members/{member}/earn", json=purchase(), headers={**idem(), header: value}
        )
        assert bad.status_code == 422, (header, bad.text)
        assert [e["field"] for e in bad.json()["errors"]] == [header]
    assert api.get(f"/v1/members/{member}/events").json()["events"][-1]["type"] == (
        "MemberEnrolled"
    )


def test_program_configuration_is_validated_and_recorded(api: httpx.Client) -> None:
    current = api.get("/v1/program").json()
    document = {k: v for k, v in current.items() if k not in ("program_id", "version")}
    bad = api.put(
        "/v1/program",
        json={**document, "point_lifetime": {"kind": "rolling_months"}},
        headers=idem(),
    )
    assert bad.status_code == 422 and "point_lifetime" in bad.text
    bad_zone = api.put(
        "/v1/program", json={**document, "time_zone": "Mars/Olympus"}, headers=idem()
    )
    assert bad_zone.status_code == 422 and "time_zone" in bad_zone.text
    good = api.put("/v1/program", json={**document, "rounding": "nearest"}, headers=idem())
    assert good.status_code == 200 and good.json()["version"] == current["version"] + 1
    feed = api.get("/v1/events", params={"limit": 1000}).json()["events"]
    configured = [e for e in feed if e["type"] == "ProgramConfigured"]
    assert configured[-1]["data"]["config"]["rounding"] == "nearest"


def test_a_changed_configuration_applies_to_the_next_earn(api: httpx.Client) -> None:
    # The ledger keeps configurations it has seen and loads them again only when the
    # version moved: the earn after a change must see the new rate.
    member = enrol(api)
    assert earn(api, member, "100")["points"] == 100
    current = api.get("/v1/program").json()
    document = {k: v for k, v in current.items() if k not in ("program_id", "version")}
    rates = {**document["earn_rates"], "NOK": "3"}
    put = api.put("/v1/program", json={**document, "earn_rates": rates}, headers=idem())
    assert put.status_code == 200, put.text
    assert earn(api, member, "100")["points"] == 300
    assert api.get(f"/v1/members/{member}/balance").json()["available"] == 400


def test_global_feed_pages_by_cursor(api: httpx.Client) -> None:
    member = enrol(api)
    for _ in range(5):
        earn(api, member, "10")
    seen: list[int] = []
    cursor = None
    while True:
        page = api.get("/v1/events", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        if not page.json()["events"]:
            break
        seen.extend(e["position"] for e in page.json()["events"])
        cursor = page.json()["next_cursor"]
    assert len(seen) == len(set(seen)) >= 7
    for bad_cursor in (
        "x",
        "99999999999999999999-1",
        "1-99999999999999999999",
        "\u00b2-1",
        "\u0663-1",
        "1-" + "1" * 60,
    ):
        bad = api.get("/v1/events", params={"cursor": bad_cursor})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor", bad_cursor


def test_unknown_transaction_is_transaction_not_found(api: httpx.Client) -> None:
    response = api.post(f"/v1/transactions/{uuid.uuid4()}/reverse", headers=idem())
    assert response.status_code == 404
    assert response.json()["code"] == "transaction_not_found"


def test_enrolment_twins_get_one_member(program: Program) -> None:
    import asyncio

    body = {"external_id": f"twin-{uuid.uuid4().hex[:8]}"}
    headers = idem()

    async def burst() -> list[httpx.Response]:
        async with program.async_client() as client:
            return await asyncio.gather(
                *(client.post("/v1/members", json=body, headers=headers) for _ in range(10))
            )

    responses = asyncio.run(burst())
    created = [r for r in responses if r.status_code == 201]
    assert created and {r.status_code for r in responses} <= {201, 409}
    assert len({r.json()["member_id"] for r in created}) == 1


def test_changed_qualification_period_moves_the_clock_schedule(
    api: httpx.Client, database_url: str
) -> None:
    import asyncio

    import asyncpg

    def configure(kind: str) -> None:
        document = {
            k: v
            for k, v in api.get("/v1/program").json().items()
            if k not in ("program_id", "version")
        }
        document["qualification_period"] = {"kind": kind}
        assert api.put("/v1/program", json=document, headers=idem()).status_code == 200

    configure("rolling_12_months")
    member = enrol(api)

    async def next_end() -> datetime:
        conn = await asyncpg.connect(database_url)
        try:
            value: datetime = await conn.fetchval(
                "SELECT next_period_end FROM members WHERE member_id = $1", uuid.UUID(member)
            )
            return value
        finally:
            await conn.close()

    month_end = asyncio.run(next_end())
    # Not the calendar year: in December its end is the month end, whatever the config.
    configure("anniversary")
    # The stored schedule still says month end. The visit it causes records nothing (the
    # member's anniversary year has not ended) but moves the schedule, so later runs skip
    # the member.
    first = api.post("/v1/ops/clock", params={"as_of": month_end.isoformat()}).json()
    assert first["members"] == 1 and first["events"] == {}
    assert asyncio.run(next_end()) > month_end
    again = api.post("/v1/ops/clock", params={"as_of": month_end.isoformat()}).json()
    assert again["members"] == 0


def test_consents_change_per_channel_and_only_when_they_differ(api: httpx.Client) -> None:
    member = enrol(api, consents={"email": True, "sms": True})
    changed = api.post(
        f"/v1/members/{member}/consents",
        json={"consents": {"email": False}, "source": "unsubscribe link"},
        headers=idem(),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["consents"] == {"email": False, "sms": True}
    again = api.post(
        f"/v1/members/{member}/consents", json={"consents": {"email": False}}, headers=idem()
    )
    assert again.json()["consents"] == {"email": False, "sms": True}
    events = api.get(f"/v1/members/{member}/events").json()["events"]
    assert [e["type"] for e in events] == ["MemberEnrolled", "ConsentsChanged"]
    assert events[1]["data"]["consents"] == {"email": False}
    assert events[1]["reason"] == "unsubscribe link"
    for bad in ({"consents": {}}, {"consents": {"fax": False}}, {"consents": {"email": "no"}}):
        refused = api.post(f"/v1/members/{member}/consents", json=bad, headers=idem())
        assert refused.status_code == 422, bad
        assert refused.json()["code"] == "validation_error"
