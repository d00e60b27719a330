"""Coupons at the ledger, and service keys that act for the program a request names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.integration.conftest import Program, earn, enrol, idem, service_key


def _coupon(**fields: object) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "kind": "amount",
        "value": "100",
        "currency": "NOK",
        "valid_from": (now - timedelta(minutes=1)).isoformat(),
        "valid_until": (now + timedelta(days=30)).isoformat(),
        **fields,
    }


def test_service_key_acts_for_the_named_program_and_records_the_cause(
    program: Program, database_url: str
) -> None:
    key = service_key(database_url, "rules-test")
    with program.client() as api:
        member = enrol(api)
    with httpx.Client(
        base_url=program.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as service:
        unnamed = service.post(
            f"/v1/members/{member}/earn", json={"points": 50, "reason": "x"}, headers=idem()
        )
        assert unnamed.status_code == 400
        assert unnamed.json()["code"] == "program_required"
        named = {"X-Loyalty-Program": program.program_id}
        me = service.get("/v1/keys/self", headers=named).json()
        assert me["program_id"] == program.program_id
        assert me["scopes"] == ["ops", "points:write"]
        earned = service.post(
            f"/v1/members/{member}/earn",
            json={"points": 50, "reason": "welcome: welcome to the club"},
            headers={**named, **idem(), "X-Causation-Id": "ledger-event-42"},
        )
        assert earned.status_code == 201, earned.text
        # Its scopes still bind: no points:read.
        assert (
            service.get(f"/v1/members/{member}/balance", headers=named).json()["code"]
            == "forbidden"
        )
        # Another program's member is not found through that program.
        other = service.post(
            f"/v1/members/{member}/earn",
            json={"points": 50, "reason": "x"},
            headers={**idem(), "X-Loyalty-Program": "00000000-0000-0000-0000-000000000000"},
        )
        assert other.status_code == 404
    with program.client() as api:
        events = api.get(f"/v1/members/{member}/events").json()["events"]
        assert events[-1]["causation_id"] == "ledger-event-42"
        assert api.get("/v1/keys/self").json()["program_id"] == program.program_id


def test_coupons_are_issued_listed_and_redeemed_once(program: Program) -> None:
    with program.client() as api, program.client(program.checkout_key) as till:
        member = enrol(api)
        earn(api, member, "300.00")
        headers, body = idem(), _coupon(points_cost=200)
        issued = api.post(f"/v1/members/{member}/coupons", json=body, headers=headers)
        assert issued.status_code == 201, issued.text
        coupon = issued.json()
        again = api.post(f"/v1/members/{member}/coupons", json=body, headers=headers)
        assert again.json()["code"] == coupon["code"]  # the same coupon, not a second one
        listed = api.get(f"/v1/members/{member}/coupons").json()["coupons"]
        assert [c["code"] for c in listed] == [coupon["code"]]
        assert listed[0]["status"] == "issued"

        used = till.post(
            f"/v1/coupons/{coupon['code']}/redeem",
            json={"order_id": "o-1", "order_amount": "800.00", "currency": "NOK"},
            headers=idem(),
        )
        assert used.status_code == 200, used.text
        assert used.json()["status"] == "redeemed"
        assert used.json()["balance"]["available"] == 100  # 300 earned, 200 paid
        twice = till.post(f"/v1/coupons/{coupon['code']}/redeem", json={}, headers=idem())
        assert twice.status_code == 409
        assert twice.json()["code"] == "coupon_already_redeemed"
        types = [e["type"] for e in api.get(f"/v1/members/{member}/events").json()["events"]]
        assert types[-2:] == ["PointsRedeemed", "CouponRedeemed"]


def test_coupon_refusals_write_nothing(program: Program) -> None:
    with program.client() as api:
        member = enrol(api)
        costly = api.post(
            f"/v1/members/{member}/coupons", json=_coupon(points_cost=500), headers=idem()
        ).json()
        poor = api.post(f"/v1/coupons/{costly['code']}/redeem", json={}, headers=idem())
        assert poor.status_code == 409
        assert poor.json()["code"] == "insufficient_points"
        later = datetime.now(UTC) + timedelta(days=1)
        future = api.post(
            f"/v1/members/{member}/coupons",
            json=_coupon(valid_from=later.isoformat()),
            headers=idem(),
        ).json()
        early = api.post(f"/v1/coupons/{future['code']}/redeem", json={}, headers=idem())
        assert early.json()["code"] == "coupon_not_valid"
        unknown = api.post("/v1/coupons/NOSUCHCODE/redeem", json={}, headers=idem())
        assert unknown.status_code == 404
        assert unknown.json()["code"] == "coupon_not_found"
        for bad, field in (
            (_coupon(currency=None), "currency"),
            (_coupon(kind="percent", value="150", currency=None), "percent"),
            (_coupon(valid_until="2020-01-01T00:00:00Z"), "valid_until"),
        ):
            refused = api.post(f"/v1/members/{member}/coupons", json=bad, headers=idem())
            assert refused.status_code == 422, bad
            assert field in refused.text
        statuses = [c["status"] for c in api.get(f"/v1/members/{member}/coupons").json()["coupons"]]
        assert statuses == ["issued", "issued"]
        # Issuing needs ops.
    with program.client(program.checkout_key) as till:
        denied = till.post(f"/v1/members/{member}/coupons", json=_coupon(), headers=idem())
        assert denied.status_code == 403
