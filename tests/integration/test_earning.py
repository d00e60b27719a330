"""Earning through the API: order lines are checked against the purchase, and a purchase
earns the tier multiplier of its own time, from the tiers `loyalty follow` keeps."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from loyalty_common.db import connect
from loyalty_common.proto.loyalty.rules.v1 import tiers_pb2
from loyalty_common.testing import eventually

from tests.integration.conftest import FollowProcess, Program, earn, enrol, idem, purchase

TIERS = "loyalty.tiers.events.v1"


def test_order_lines_adding_up_to_more_than_the_purchase_are_refused(
    api: httpx.Client,
) -> None:
    member = enrol(api)
    # A line's amount is its total: 2 x 60 is 60, and 60 + 50 > 100.
    lines = [
        {"sku": "DOGFOOD-12KG", "quantity": 2, "amount": "60.00", "category": "pet"},
        {"sku": "LEASH", "quantity": 1, "amount": "50.00", "category": "pet"},
    ]
    response = api.post(
        f"/v1/members/{member}/earn", json=purchase("100.00", lines=lines), headers=idem()
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["code"], problem["field"]) == ("lines_exceed_purchase", "lines")
    assert (problem["lines_amount"], problem["amount"]) == ("110.00", "100.00")
    assert api.get(f"/v1/members/{member}/balance").json()["lifetime_earned"] == 0

    within = earn(api, member, "110.00", lines=lines)
    assert within["points"] == 110


def _tier_changed(
    program: Program, member: str, from_tier: str, to_tier: str, at: datetime
) -> tiers_pb2.TierEvent:
    event = tiers_pb2.TierEvent(
        event_id=str(uuid.uuid4()),
        type="TierChanged",
        program_id=program.program_id,
        member_id=member,
        correlation_id="test",
    )
    event.occurred_at.FromDatetime(at)
    event.recorded_at.GetCurrentTime()
    changed = event.tier_changed
    changed.from_tier, changed.to_tier = from_tier, to_tier
    changed.reason = "enrolled" if not from_tier else "qualified"
    return event


async def _publish(bootstrap: str, events: list[tiers_pb2.TierEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                TIERS,
                key=event.member_id.encode(),
                value=event.SerializeToString(),
                headers=[("event_id", event.event_id.encode())],
            )
    finally:
        await producer.stop()


async def _history(database_url: str, member: str) -> list[tuple[datetime, str]]:
    conn = await connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT effective_from, tier FROM member_tier_history"
            " WHERE member_id = $1 ORDER BY effective_from",
            uuid.UUID(member),
        )
    finally:
        await conn.close()
    return [(row["effective_from"], row["tier"]) for row in rows]


def _tier_points(api: httpx.Client, member: str, at: datetime) -> tuple[int, list[Any]]:
    body = earn(api, member, "100.00", occurred_at=at.isoformat())
    return body["points"], [(b["rule"], b["points"], b["detail"]) for b in body["breakdown"]]


def test_a_late_purchase_earns_the_multiplier_of_the_tier_held_at_its_time(
    program: Program,
    api: httpx.Client,
    follow: FollowProcess,
    kafka_bootstrap: str,
    database_url: str,
) -> None:
    member = enrol(api)
    now = datetime.now(UTC).replace(microsecond=0)
    enrolled, silver_from = now - timedelta(days=30), now - timedelta(days=10)
    base = ("base", 100, "100.00 NOK x 1 points per unit = 100.00, rounded down")
    asyncio.run(
        _publish(
            kafka_bootstrap,
            [
                _tier_changed(program, member, "", "Bronze", enrolled),
                _tier_changed(program, member, "Bronze", "Silver", silver_from),
            ],
        )
    )
    expected = [(enrolled, "Bronze"), (silver_from, "Silver")]
    eventually(lambda: asyncio.run(_history(database_url, member)) == expected, what="followed")

    # Reported late, dated before the upgrade: Bronze's multiplier (1), not Silver's.
    assert _tier_points(api, member, silver_from - timedelta(days=1)) == (100, [base])
    silver = (125, [base, ("tier", 25, "Silver x 1.25")])
    assert _tier_points(api, member, silver_from + timedelta(days=1)) == silver
    assert _tier_points(api, member, now) == silver

    # A later announcement dated earlier (a late purchase re-evaluated the tier) is the
    # tier from its time on: the Silver row after it is replaced.
    gold_from = silver_from - timedelta(days=5)
    asyncio.run(
        _publish(kafka_bootstrap, [_tier_changed(program, member, "Silver", "Gold", gold_from)])
    )
    expected = [(enrolled, "Bronze"), (gold_from, "Gold")]
    eventually(lambda: asyncio.run(_history(database_url, member)) == expected, what="Gold")
    gold = (150, [base, ("tier", 50, "Gold x 1.5")])
    assert _tier_points(api, member, silver_from + timedelta(days=1)) == gold
    assert _tier_points(api, member, gold_from - timedelta(days=1)) == (100, [base])
