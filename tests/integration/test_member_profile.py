"""Members looked up by the keys a checkout knows them by, and their profile changed by
JSON merge patch: real HTTP server, real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from ledger.adapters.repository import find_members_sql
from loyalty_common.db import connect

from tests.integration.conftest import Program, idem, new_program


def _enrol(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"external_id": f"ext-{uuid.uuid4().hex[:10]}", **fields}
    response = api.post("/v1/members", json=body, headers=idem())
    assert response.status_code == 201, response.text
    return dict(response.json())


def _found(api: httpx.Client, **query: str) -> list[str]:
    response = api.get("/v1/members", params=query)
    assert response.status_code == 200, response.text
    return [m["member_id"] for m in response.json()["members"]]


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def test_names_on_enrolment_and_in_the_member_view(api: httpx.Client) -> None:
    member = _enrol(api, first_name="  Kari ", last_name="Nordmann", phone="+47 912 34 567")
    assert (member["first_name"], member["last_name"]) == ("Kari", "Nordmann")
    assert member["phone"] == "+4791234567"
    read = api.get(f"/v1/members/{member['member_id']}").json()
    assert read == member
    plain = _enrol(api)
    assert (plain["first_name"], plain["last_name"]) == (None, None)
    blank = api.post(
        "/v1/members", json={"external_id": "x-blank", "first_name": " "}, headers=idem()
    )
    assert _problem(blank, 422, "validation_error")["errors"][0]["field"] == "first_name"


def test_look_up_by_each_key_in_the_keys_program_only(
    program: Program, database_url: str, ledger_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    email, phone, card = f"Kari.{tag}@Example.no", f"+4798{int(tag, 16) % 10**6:06d}", f"c-{tag}"
    with program.client() as api:
        kari = _enrol(api, email=email, phone=phone)
        twin = _enrol(api, phone=phone)  # a family sharing one phone
        linked = api.post(
            f"/v1/members/{kari['member_id']}/cards", json={"card_token": card}, headers=idem()
        )
        assert linked.status_code == 201, linked.text
        kari["cards"] = [card]
        listed = api.get("/v1/members", params={"external_id": kari["external_id"]}).json()
        assert listed == {"members": [kari]}  # the member view of GET /v1/members/{id}
        assert _found(api, card_token=card) == [kari["member_id"]]
        assert _found(api, email=email.upper()) == [kari["member_id"]]
        assert _found(api, email=email.lower()) == [kari["member_id"]]
        assert _found(api, phone=phone) == [kari["member_id"], twin["member_id"]]
        # Typed with spaces, or with "+" unencoded in the query string (a space then).
        assert _found(api, phone=f"{phone[:3]} {phone[3:6]} {phone[6:]}") == _found(
            api, phone=phone
        )
        raw = api.get(f"/v1/members?phone={phone}")
        assert [m["member_id"] for m in raw.json()["members"]] == _found(api, phone=phone)
        assert _found(api, external_id="nobody-" + tag) == []
    other = new_program(database_url, ledger_url, "Other Club")
    with other.client() as api:
        for query in (
            {"external_id": kari["external_id"]},
            {"card_token": card},
            {"email": email},
            {"phone": phone},
        ):
            assert _found(api, **query) == []
    with program.client(program.checkout_key) as checkout:  # points:read suffices
        assert _found(checkout, email=email) == [kari["member_id"]]


def test_a_look_up_takes_exactly_one_valid_key(program: Program) -> None:
    with program.client() as api:
        none = _problem(api.get("/v1/members"), 422, "validation_error")
        assert {e["field"] for e in none["errors"]} == {
            "external_id",
            "card_token",
            "email",
            "phone",
        }
        two = _problem(
            api.get("/v1/members", params={"email": "a@b.no", "phone": "+4791234567"}),
            422,
            "validation_error",
        )
        assert {e["field"] for e in two["errors"]} == {"email", "phone"}
        twice = api.get("/v1/members", params=[("email", "a@b.no"), ("email", "c@d.no")])
        _problem(twice, 422, "validation_error")
        unknown = _problem(
            api.get("/v1/members", params={"email": "a@b.no", "name": "Kari"}),
            422,
            "validation_error",
        )
        assert [e["field"] for e in unknown["errors"]] == ["name"]
        for field, bad in (
            ("email", "not-an-email"),
            ("phone", "12345"),
            ("phone", "+47 abc"),
            ("card_token", "x"),
            ("external_id", "has space"),
        ):
            body = _problem(api.get("/v1/members", params={field: bad}), 422, "validation_error")
            assert [e["field"] for e in body["errors"]] == [field], body
    with program.client("lk_nope_nope") as stranger:
        assert stranger.get("/v1/members", params={"email": "a@b.no"}).status_code == 401


@pytest.mark.parametrize(
    ("key", "index"),
    [
        ("external_id", "members_program_id_external_id_key"),
        ("card_token", "cards_pkey"),
        ("email", "members_email"),
        ("phone", "members_phone"),
    ],
)
def test_each_look_up_is_an_index_scan(database_url: str, key: str, index: str) -> None:
    async def plan() -> str:
        conn = await connect(database_url)
        try:
            # A program of many members, so that the planner weighs the indexes as on a
            # real database (on a nearly empty table any index on program_id looks as
            # good); rolled back, with the statistics ANALYZE took inside.
            async with conn.transaction():
                await conn.execute(_MANY_MEMBERS, uuid.uuid4())
                await conn.execute("ANALYZE members; ANALYZE cards")
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")  # the pool's
                await conn.execute(f"PREPARE look_up(uuid, text) AS {find_members_sql(key)}")
                rows = await conn.fetch("EXPLAIN EXECUTE look_up(gen_random_uuid(), 'x')")
                await conn.execute("DEALLOCATE look_up")
                raise _RollBack("\n".join(r[0] for r in rows))
        except _RollBack as done:
            return str(done)
        finally:
            await conn.close()

    text = asyncio.run(plan())
    assert f"Index Scan using {index} " in text or f"Index Only Scan using {index} " in text, text
    assert "Seq Scan" not in text, text


class _RollBack(Exception):
    pass


_MANY_MEMBERS = """
WITH m AS (
    INSERT INTO members (member_id, program_id, external_id, version, enrolled_at, profile,
                         available, pending, debt, lifetime_earned, qualifying, next_period_end)
    SELECT gen_random_uuid(), $1, 'many-' || i, 1, now(),
           jsonb_build_object('email', 'm' || i || '@example.no',
                              'phone', '+4790' || lpad(i::text, 6, '0')),
           0, 0, 0, 0, '{}', now() + interval '1 year'
      FROM generate_series(1, 5000) AS i
    RETURNING member_id, external_id
)
INSERT INTO cards (program_id, card_token, member_id)
SELECT $1, 'card-' || external_id, member_id FROM m
"""


def test_profile_patch_records_only_what_changed(api: httpx.Client) -> None:
    member = _enrol(
        api, email="ola@example.no", phone="+4791111111", birthday="1990-05-17", locale="nb"
    )
    path = f"/v1/members/{member['member_id']}"
    patch = {"email": "ola.n@example.no", "phone": None, "first_name": "Ola", "locale": "nb"}
    key = idem()
    changed = api.patch(path, json=patch, headers=key)
    assert changed.status_code == 200, changed.text
    view = changed.json()
    assert (view["email"], view["phone"], view["first_name"]) == ("ola.n@example.no", None, "Ola")
    assert (view["birthday"], view["locale"]) == ("1990-05-17", "nb")
    assert api.get(path).json() == view

    events = api.get(f"{path}/events").json()["events"]
    assert [e["type"] for e in events] == ["MemberEnrolled", "MemberProfileChanged"]
    data = events[-1]["data"]
    assert data["email"] == "ola.n@example.no" and data["first_name"] == "Ola"
    assert data["cleared"] == ["phone"]
    assert data["locale"] is None and data["birthday"] is None  # unchanged: not in it

    # A retry with the same key answers the same; the same key on another body is refused.
    again = api.patch(path, json=patch, headers=key)
    assert (again.status_code, again.json()) == (200, view)
    _problem(
        api.patch(path, json={"first_name": "Per"}, headers=key), 422, "idempotency_key_reused"
    )

    # Nothing changes: no event, the member as it is.
    same = api.patch(path, json={"email": "ola.n@example.no", "phone": None}, headers=idem())
    assert (same.status_code, same.json()) == (200, view)
    assert len(api.get(f"{path}/events").json()["events"]) == 2

    moved = api.patch(  # RFC 7396's own media type is taken as well
        path,
        content=b'{"birthday": "1991-02-03", "time_zone": "Europe/Stockholm",'
        b' "last_name": "Nordmann"}',
        headers={**idem(), "Content-Type": "application/merge-patch+json"},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["birthday"] == "1991-02-03"
    assert moved.json()["last_name"] == "Nordmann"


def test_profile_patch_refuses_what_it_cannot_apply(program: Program) -> None:
    with program.client() as api:
        member = _enrol(api)
        path = f"/v1/members/{member['member_id']}"
        for body, field in (
            ({"nickname": "K"}, "nickname"),
            ({"external_id": "new"}, "external_id"),
            ({"consents": {"email": True}}, "consents"),
            ({"email": "nope"}, "email"),
            ({"phone": "12"}, "phone"),
            ({"birthday": "2999-01-01"}, "birthday"),
            ({"time_zone": "Mars/Olympus"}, "time_zone"),
            ({"first_name": "Ka\nri"}, "first_name"),
        ):
            refused = _problem(api.patch(path, json=body, headers=idem()), 422, "validation_error")
            assert [e["field"] for e in refused["errors"]] == [field], refused
        missing_key = api.patch(path, json={"first_name": "Kari"})
        _problem(missing_key, 422, "validation_error")
        unknown = api.patch(f"/v1/members/{uuid.uuid4()}", json={"first_name": "K"}, headers=idem())
        _problem(unknown, 404, "member_not_found")
        assert len(api.get(f"{path}/events").json()["events"]) == 1
    with program.client(program.checkout_key) as checkout:  # members:write
        ok = checkout.patch(path, json={"first_name": "Kari"}, headers=idem())
        assert ok.status_code == 200, ok.text
