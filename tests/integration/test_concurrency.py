"""Concurrent writers against one member: no lost update, no overdraft, one effect per key."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import httpx

from tests.integration.conftest import Program, earn, enrol, idem, purchase


async def _burst(program: Program, requests: list[tuple[str, dict, dict]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests))
    async with program.async_client(limits=limits) as client:
        return await asyncio.gather(
            *(client.post(path, json=body, headers=headers) for path, body, headers in requests)
        )


def test_fifty_concurrent_redemptions_leave_exactly_ten(program: Program) -> None:
    with program.client() as api:
        member = enrol(api)
        earn(api, member, "1000")
    responses = asyncio.run(
        _burst(
            program, [(f"/v1/members/{member}/redeem", {"points": 100}, idem()) for _ in range(50)]
        )
    )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 10, 409: 40}, [r.text for r in responses if r.status_code != 201][:3]
    assert all(r.json()["code"] == "insufficient_points" for r in responses if r.status_code == 409)
    with program.client() as api:
        balance = api.get(f"/v1/members/{member}/balance").json()
        assert balance["available"] == 0
        events = api.get(f"/v1/members/{member}/events", params={"limit": 1000}).json()
        assert sum(e["type"] == "PointsRedeemed" for e in events["events"]) == 10


def test_fifty_concurrent_requests_with_one_key_leave_one_transaction(program: Program) -> None:
    with program.client() as api:
        member = enrol(api)
    body, headers = purchase("100"), idem()
    responses = asyncio.run(
        _burst(program, [(f"/v1/members/{member}/earn", body, headers) for _ in range(50)])
    )
    created = [r for r in responses if r.status_code == 201]
    assert created, [r.text for r in responses][:3]
    # Twins either wait and get the first response, or are told the first is in flight.
    assert {r.status_code for r in responses} <= {201, 409}
    assert all(
        r.json()["code"] == "idempotency_request_in_progress"
        for r in responses
        if r.status_code == 409
    )
    assert len({r.json()["transaction_id"] for r in created}) == 1
    with program.client() as api:
        events = api.get(f"/v1/members/{member}/events").json()["events"]
        assert [e["type"] for e in events] == ["MemberEnrolled", "PointsEarned"]
        assert api.get(f"/v1/members/{member}/balance").json()["available"] == 100


def test_concurrent_earns_lose_no_update(program: Program) -> None:
    with program.client() as api:
        member = enrol(api)
    responses = asyncio.run(
        _burst(program, [(f"/v1/members/{member}/earn", purchase("10"), idem()) for _ in range(40)])
    )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses][:3]
    with program.client() as api:
        assert api.get(f"/v1/members/{member}/balance").json()["available"] == 400


async def _mutate(dsn: str, sql: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
        return "allowed"
    except asyncpg.PostgresError as exc:
        return type(exc).__name__
    finally:
        await conn.close()


def test_event_store_refuses_update_delete_truncate(program: Program, database_url: str) -> None:
    with program.client() as api:
        enrol(api)
    for sql in ("UPDATE events SET reason = 'edited'", "DELETE FROM events", "TRUNCATE events"):
        assert asyncio.run(_mutate(database_url, sql)) == "RestrictViolationError", sql
