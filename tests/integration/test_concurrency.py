"""Concurrent writers against one member: no lost update, no overdraft, one effect per key."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

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


def _metrics(program: Program) -> dict[str, float]:
    """The ledger's unlabelled samples at /metrics, by name."""
    text = httpx.get(f"{program.url}/metrics").text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def _batch_counts(program: Program) -> tuple[float, float]:
    """(batches, commands) so far."""
    values = _metrics(program)
    return values["loyalty_write_batch_commands_count"], values["loyalty_write_batch_commands_sum"]


def _constraint_rollbacks(program: Program) -> float:
    return _metrics(program).get("loyalty_write_batch_rollbacks_total", 0.0)


def test_a_burst_over_many_members_is_batched_and_each_gets_its_own_answer(
    program: Program,
) -> None:
    """Commands arriving together share batches (loads in one round trip, saves in one
    transaction), and each still gets its own answer: nothing lost or doubled."""
    with program.client() as api:
        members = [enrol(api) for _ in range(20)]
        for member in members[:5]:
            earn(api, member, "5", order_id=f"dup-{member}")
    batches_before, commands_before = _batch_counts(program)
    requests: list[tuple[str, dict, dict]] = []
    for member in members:
        for amount in ("10", "20", "30"):
            requests.append((f"/v1/members/{member}/earn", purchase(amount), idem()))
    for member in members[:5]:  # already earned: each a 409, under a fresh key
        requests.append(
            (f"/v1/members/{member}/earn", purchase("40", order_id=f"dup-{member}"), idem())
        )
    for _ in range(2):  # one order twice, racing: one 201, one 409
        requests.append((f"/v1/members/{members[7]}/earn", purchase("50", order_id="race"), idem()))
    responses = asyncio.run(_burst(program, requests))

    by_request = list(zip(requests, responses, strict=True))
    assert all(r.status_code == 201 for _, r in by_request[:60]), [
        r.text for _, r in by_request[:60] if r.status_code != 201
    ][:3]
    duplicates = [r for _, r in by_request[60:65]]
    assert [(r.status_code, r.json()["code"]) for r in duplicates] == [(409, "duplicate_order")] * 5
    assert sorted(r.status_code for _, r in by_request[65:]) == [201, 409]

    batches_after, commands_after = _batch_counts(program)
    assert commands_after - commands_before >= len(requests)
    assert commands_after - commands_before > batches_after - batches_before  # shared

    earned: Counter[str] = Counter()
    for (path, _, _), response in by_request:
        if response.status_code == 201:
            earned[path.split("/")[3]] += response.json()["points"]
    with program.client() as api:
        for index, member in enumerate(members):
            balance = api.get(f"/v1/members/{member}/balance").json()
            assert balance["available"] == earned[member] + (5 if index < 5 else 0)
            events = api.get(f"/v1/members/{member}/events", params={"limit": 100}).json()
            earns = [e for e in events["events"] if e["type"] == "PointsEarned"]
            expected = 3 + (1 if index < 5 else 0) + (1 if index == 7 else 0)
            assert len(earns) == expected, member


def test_a_constraint_failing_in_a_batch_costs_its_batch_mates_nothing(program: Program) -> None:
    """Enrolments racing for one external id meet at its unique constraint, which rolls
    back the whole batch they share; the batch's other commands then run alone and
    succeed, and each racing pair ends with one member and one 409."""
    requests: list[tuple[str, dict, dict]] = []
    for index in range(40):
        requests.append(("/v1/members", {"external_id": f"solo-{index}"}, idem()))
    for pair in range(8):
        for _ in range(2):
            requests.append(("/v1/members", {"external_id": f"pair-{pair}"}, idem()))
    rounds = 0
    while True:  # until some racing pair met in one batch's statement (almost always)
        rounds += 1
        prefix = f"r{rounds}-"
        burst = [(p, {"external_id": prefix + b["external_id"]}, h) for p, b, h in requests]
        responses = asyncio.run(_burst(program, burst))
        statuses = [r.status_code for r in responses]
        assert statuses[:40] == [201] * 40, [r.text for r in responses if r.status_code != 201]
        for pair in range(8):
            twins = responses[40 + 2 * pair : 42 + 2 * pair]
            assert sorted(r.status_code for r in twins) == [201, 409]
            assert [r.json()["code"] for r in twins if r.status_code == 409] == ["member_exists"]
        for pair in range(8):
            twins = responses[40 + 2 * pair : 42 + 2 * pair]
            assert twins[0].json()["member_id"] == twins[1].json()["member_id"]
        with program.client() as api:
            for (_, body, _), response in zip(burst, responses, strict=True):
                if response.status_code == 201:
                    member = api.get(f"/v1/members/{response.json()['member_id']}").json()
                    assert member["external_id"] == body["external_id"]
        if _constraint_rollbacks(program) or rounds == 5:
            break
    assert _constraint_rollbacks(program), "no racing pair shared a batch in five bursts"


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
