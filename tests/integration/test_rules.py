"""The rules service end to end: ledger → relay → Kafka → rules → Kafka → ledger.

Real processes on real PostgreSQL and the embedded broker: the ledger API, the relay,
`loyalty follow`, and `rules serve`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from loyalty_common.proto.loyalty.rules.v1 import campaigns_pb2, tiers_pb2
from loyalty_common.testing import eventually

from tests.integration.conftest import (
    Program,
    RulesProcess,
    command_path,
    earn,
    enrol,
    idem,
    new_program,
    protoc_decode,
    start_rules,
)

pytestmark = pytest.mark.usefixtures("relay", "follow")


def rules_client(program: Program, rules: RulesProcess) -> httpx.Client:
    return httpx.Client(
        base_url=rules.url,
        timeout=30,
        headers={"Authorization": f"Bearer {program.admin_key}"},
    )


async def _read(bootstrap: str, topic: str, message_type: Any, timeout: float) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=2000,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        idle = 0
        while loop.time() < deadline and idle < 4:
            batches = await consumer.getmany(timeout_ms=500)
            idle = 0 if batches else idle + (1 if found else 0)
            for messages in batches.values():
                found.extend(message_type.FromString(m.value) for m in messages)
    finally:
        await consumer.stop()
    return found


def topic_events(bootstrap: str, topic: str, message_type: Any, timeout: float = 10) -> list[Any]:
    return asyncio.run(_read(bootstrap, topic, message_type, timeout))


@pytest.fixture
def club(database_url: str, ledger_url: str) -> Program:
    return new_program(database_url, ledger_url, "Rules Club")


def tier_of(client: httpx.Client, member_id: str) -> dict[str, Any] | None:
    response = client.get(f"/v1/members/{member_id}/tier")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_tier_upgrade_reaches_the_topic_and_the_next_earn(
    club: Program, rules: RulesProcess, kafka_bootstrap: str
) -> None:
    with club.client() as api, rules_client(club, rules) as rules_api:
        member = enrol(api)
        bronze = eventually(lambda: tier_of(rules_api, member), what="the member at rules")
        assert bronze["tier"] == "Bronze"

        earn(api, member, "5000.00")  # the default ladder: Silver from 5000
        silver = eventually(
            lambda: (t := tier_of(rules_api, member)) and t["tier"] == "Silver" and t,
            what="Silver at the rules API",
        )
        assert silver["qualifying_points"] == 5000
        assert silver["next_tier"] == "Gold"
        assert silver["points_to_next"] == 10000

        changes = [
            e
            for e in topic_events(kafka_bootstrap, "loyalty.tiers.events.v1", tiers_pb2.TierEvent)
            if e.member_id == member and e.type == "TierChanged"
        ]
        assert [(e.tier_changed.from_tier, e.tier_changed.to_tier) for e in changes] == [
            ("", "Bronze"),
            ("Bronze", "Silver"),
        ]
        assert changes[-1].tier_changed.reason == "qualified"

        def silver_earn() -> dict[str, Any] | None:
            body = earn(api, member, "100.00")
            rules_applied = {line["rule"]: line for line in body["breakdown"]}
            return body if "tier" in rules_applied else None

        body = eventually(silver_earn, what="the Silver multiplier at the ledger")
        lines = {line["rule"]: line for line in body["breakdown"]}
        assert lines["base"]["points"] == 100
        assert lines["tier"]["points"] == 25  # Silver earns x 1.25
        assert "Silver" in lines["tier"]["detail"]
        assert body["points"] == 125


def test_double_points_weekend_applies_inside_its_window_only(
    club: Program, rules: RulesProcess
) -> None:
    # A weekend at least a week back: purchases may not lie in the future.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    saturday = today - timedelta(days=(today.weekday() - 5) % 7 + 7)
    weekend = (saturday, saturday + timedelta(days=2))
    second = timedelta(seconds=1)
    with club.client() as api, rules_client(club, rules) as rules_api:
        created = rules_api.post(
            "/v1/campaigns/bonus",
            json={
                "name": "Double points weekend",
                "multiplier": "2",
                "starts_at": weekend[0].isoformat(),
                "ends_at": weekend[1].isoformat(),
            },
            headers=idem(),
        )
        assert created.status_code == 201, created.text
        member = enrol(api)

        def inside() -> dict[str, Any] | None:
            at = weekend[0] + timedelta(hours=10)
            body = earn(api, member, "100.00", occurred_at=at.isoformat())
            return body if body["points"] == 200 else None

        body = eventually(inside, what="the campaign at the ledger")
        campaign_line = next(line for line in body["breakdown"] if line["rule"] == "campaign")
        assert campaign_line["points"] == 100
        assert "Double points weekend" in campaign_line["detail"]

        before = earn(api, member, "100.00", occurred_at=(weekend[0] - second).isoformat())
        after = earn(api, member, "100.00", occurred_at=weekend[1].isoformat())
        last_moment = earn(api, member, "100.00", occurred_at=(weekend[1] - second).isoformat())
        assert (before["points"], after["points"], last_moment["points"]) == (100, 100, 200)


def _rewards(rules_api: httpx.Client, member: str) -> list[dict[str, Any]]:
    response = rules_api.get("/v1/rewards", params={"member_id": member})
    assert response.status_code == 200, response.text
    return list(response.json()["rewards"])


def dog_food(quantity: int = 1) -> dict[str, Any]:
    return {"sku": "dog-food-12kg", "category": "dog_food", "quantity": quantity, "amount": "500"}


def test_punch_card_completes_on_the_eighth_line_and_reversals_take_punches_back(
    club: Program, rules: RulesProcess
) -> None:
    with club.client() as api, rules_client(club, rules) as rules_api:
        card = rules_api.post(
            "/v1/punch-cards",
            json={
                "name": "8th bag free",
                "category": "dog_food",
                "size": 8,
                "reward": {"points": 500},
            },
            headers=idem(),
        )
        assert card.status_code == 201, card.text
        member = enrol(api)

        def progress() -> dict[str, Any] | None:
            cards = rules_api.get(f"/v1/members/{member}/punch-cards").json()["punch_cards"]
            return cards[0] if cards else None

        for n in range(1, 8):
            earn(api, member, "500.00", lines=[dog_food()])
            eventually(lambda n=n: (p := progress()) and p["punches"] == n, what=f"punch {n}")
        assert _rewards(rules_api, member) == []

        eighth = earn(api, member, "500.00", lines=[dog_food()])
        done = eventually(lambda: (p := progress()) and p["completed"] == 1 and p, what="card 1")
        assert done["punches"] == 0
        reward = eventually(
            lambda: [r for r in _rewards(rules_api, member) if r["status"] == "done"],
            what="the reward at the ledger",
        )
        assert len(reward) == 1 and reward[0]["kind"] == "earn_bonus"

        # A reversal of a purchase that completed a card leaves the completed card alone.
        reversed_ = api.post(
            f"/v1/transactions/{eighth['transaction_id']}/reverse", json={}, headers=idem()
        )
        assert reversed_.status_code == 201, reversed_.text

        # Two bags on the next card, then one of those purchases is refunded.
        first = earn(api, member, "500.00", lines=[dog_food()])
        earn(api, member, "500.00", lines=[dog_food()])
        eventually(lambda: (p := progress()) and p["punches"] == 2, what="two punches")
        refund = api.post(
            f"/v1/transactions/{first['transaction_id']}/reverse", json={}, headers=idem()
        )
        assert refund.status_code == 201, refund.text
        after = eventually(lambda: (p := progress()) and p["punches"] == 1 and p, what="refund")
        assert after["completed"] == 1
        assert len(_rewards(rules_api, member)) == 1


def _ledger_event_count(api: httpx.Client) -> int:
    count, cursor = 0, None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/events", params=params).json()
        count += len(page["events"])
        cursor = page.get("next_cursor")
        if not cursor or not page["events"]:
            return count


async def _tier_history(dsn: str, program_id: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT event_id, member_id, from_tier, to_tier, reason, occurred_at
                 FROM tier_history WHERE program_id = $1 ORDER BY member_id, seq""",
            uuid.UUID(program_id),
        )
    finally:
        await conn.close()
    return [tuple(row) for row in rows]


async def _copy_settings(source: str, target: str, program_id: str) -> None:
    conn = await asyncpg.connect(source)
    try:
        triggers = await conn.fetchval(
            "SELECT triggers::text FROM programs WHERE program_id = $1", uuid.UUID(program_id)
        )
    finally:
        await conn.close()
    conn = await asyncpg.connect(target)
    try:
        await conn.execute(
            "INSERT INTO programs (program_id, triggers) VALUES ($1, $2::jsonb)",
            uuid.UUID(program_id),
            triggers,
        )
    finally:
        await conn.close()


def test_replay_into_an_empty_rules_database_gives_the_same_tiers_and_no_new_rewards(
    club: Program,
    rules: RulesProcess,
    database_url: str,
    ledger_url: str,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from loyalty_common.embedded import sibling_database

    with club.client() as api, rules_client(club, rules) as rules_api:
        triggers = rules_api.put("/v1/triggers", json={"welcome": {"points": 50}})
        assert triggers.status_code == 200, triggers.text
        members = [enrol(api) for _ in range(3)]
        earn(api, members[0], "6000.00")
        earn(api, members[1], "16000.00")
        for member in members:
            eventually(
                lambda m=member: [r for r in _rewards(rules_api, m) if r["status"] == "done"],
                what="welcome rewards",
            )
        eventually(
            lambda: (t := tier_of(rules_api, members[1])) and t["tier"] == "Gold",
            what="Gold",
        )
        before = _ledger_event_count(api)
        history = asyncio.run(_tier_history(rules.database_url, club.program_id))
        assert len(history) == 3 + 1 + 1  # three enrolments, Silver, Gold

        # The rules' own settings (triggers here) are restored as from a backup; every
        # thing else comes from the ledger topic.
        fresh = sibling_database(database_url, f"rules_{uuid.uuid4().hex[:8]}")
        subprocess.run(
            [command_path("rules"), "db", "upgrade"],
            env={**os.environ, "RULES_DATABASE_URL": fresh},
            check=True,
            capture_output=True,
        )
        asyncio.run(_copy_settings(rules.database_url, fresh, club.program_id))
        log = tmp_path_factory.mktemp("rules-replay") / "rules.log"
        url, process = start_rules(
            database_url, ledger_url, kafka_bootstrap, fresh, log, group=f"replay-{uuid.uuid4()}"
        )
        with (
            process,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {club.admin_key}"}, timeout=30
            ) as replayed,
        ):
            for member in members:
                eventually(
                    lambda m=member: [r for r in _rewards(replayed, m) if r["status"] != "pending"],
                    what="the replayed welcome rewards",
                )
            rebuilt = eventually(
                lambda: (
                    (h := asyncio.run(_tier_history(fresh, club.program_id)))
                    and len(h) == len(history)
                    and h
                ),
                what="the replayed tier history",
            )
            assert rebuilt == history
            assert all(r["status"] == "done" for m in members for r in _rewards(replayed, m))
        assert _ledger_event_count(api) == before


def test_offer_campaign_issues_coupons_to_a_tier_and_counts_them(
    club: Program, rules: RulesProcess, kafka_bootstrap: str
) -> None:
    now = datetime.now(UTC)
    with club.client() as api, rules_client(club, rules) as rules_api:
        silver = enrol(api)
        bronze = enrol(api)
        earn(api, silver, "5000.00")
        eventually(lambda: (t := tier_of(rules_api, silver)) and t["tier"] == "Silver")
        eventually(lambda: tier_of(rules_api, bronze))
        created = rules_api.post(
            "/v1/campaigns/offers",
            json={
                "name": "Silver thank-you",
                "coupon": {
                    "kind": "percent",
                    "value": "20",
                    "valid_from": now.isoformat(),
                    "valid_until": (now + timedelta(days=30)).isoformat(),
                },
                "segment": {"kind": "tier", "tiers": ["Silver"]},
            },
            headers=idem(),
        )
        assert created.status_code == 201, created.text
        campaign = created.json()
        assert campaign["targeted"] == 1
        stats = eventually(
            lambda: (
                (s := rules_api.get(f"/v1/campaigns/{campaign['campaign_id']}/stats").json())
                and s["issued"] == 1
                and s
            ),
            what="the coupon recorded at the ledger",
        )
        assert stats["redeemed"] == 0
        coupons = api.get(f"/v1/members/{silver}/coupons").json()["coupons"]
        code = coupons[0]["code"]
        used = api.post(
            f"/v1/coupons/{code}/redeem",
            json={"order_id": "o-offer-1", "order_amount": "800.00", "currency": "NOK"},
            headers=idem(),
        )
        assert used.status_code == 200, used.text
        stats = eventually(
            lambda: (
                (s := rules_api.get(f"/v1/campaigns/{campaign['campaign_id']}/stats").json())
                and s["redeemed"] == 1
                and s
            ),
            what="the redemption at rules",
        )
        assert stats["redemption_rate"] == 1.0
        assert stats["revenue"] == {"NOK": "800.00"}
        offers = [
            e
            for e in topic_events(
                kafka_bootstrap, "loyalty.campaigns.events.v1", campaigns_pb2.CampaignEvent
            )
            if e.type == "OfferIssued" and e.offer_issued.campaign_id == campaign["campaign_id"]
        ]
        assert [e.member_id for e in offers] == [silver]
        assert offers[0].offer_issued.code == code


def test_rules_api_checks_keys_and_input(club: Program, rules: RulesProcess) -> None:
    with httpx.Client(base_url=rules.url, timeout=30) as anonymous:
        assert anonymous.get("/v1/campaigns").status_code == 401
        bad = anonymous.get("/v1/campaigns", headers={"Authorization": "Bearer lk_nope"})
        assert bad.status_code == 401
        assert bad.headers["content-type"].startswith("application/problem+json")
    with httpx.Client(
        base_url=rules.url,
        timeout=30,
        headers={"Authorization": f"Bearer {club.checkout_key}"},
    ) as checkout:
        assert checkout.get("/v1/campaigns").json()["code"] == "forbidden"
    with rules_client(club, rules) as rules_api:
        wrong = rules_api.post(
            "/v1/campaigns/bonus",
            json={
                "name": "x",
                "multiplier": "2",
                "starts_at": "2026-12-07T00:00:00Z",
                "ends_at": "2026-12-05T00:00:00Z",
            },
            headers=idem(),
        )
        assert wrong.status_code == 422
        assert wrong.json()["code"] == "validation_error"
        unknown = rules_api.get(f"/v1/members/{uuid.uuid4()}/tier")
        assert unknown.status_code == 404
        assert unknown.json()["code"] == "member_not_found"


def test_referral_birthday_and_expiry_triggers_fire_once(
    club: Program, rules: RulesProcess, kafka_bootstrap: str
) -> None:
    now = datetime.now(UTC)
    with club.client() as api, rules_client(club, rules) as rules_api:
        triggers = rules_api.put(
            "/v1/triggers",
            json={
                "referral": {"points": 500},
                "birthday": {
                    "coupon": {
                        "kind": "amount",
                        "value": "100",
                        "currency": "NOK",
                        "valid_days": 30,
                    }
                },
                "points_expiring": {"days_before": 30},
            },
        )
        assert triggers.status_code == 200, triggers.text
        assert rules_api.get("/v1/triggers").json()["referral"] == {"points": 500}

        referrer = enrol(api)
        friend = enrol(api, referred_by=referrer)
        birthday = now.date().replace(year=now.year - 30)
        if (birthday.month, birthday.day) == (2, 29):  # pragma: no cover - leap day runs
            birthday = birthday.replace(day=28)
        celebrant = enrol(api, birthday=birthday.isoformat(), time_zone="UTC")
        # Points earned almost two years ago (the program keeps them 24 months).
        old = (now - timedelta(days=720)).isoformat()
        earn(api, celebrant, "300.00", occurred_at=old)

        earn(api, friend, "100.00")
        earn(api, friend, "100.00")  # a second purchase rewards no one again
        rewarded = eventually(
            lambda: [r for r in _rewards(rules_api, referrer) if r["status"] == "done"],
            what="the referral reward",
        )
        assert [r["kind"] for r in rewarded] == ["earn_bonus"]
        assert _rewards(rules_api, friend) == []

        eventually(lambda: tier_of(rules_api, celebrant), what="the celebrant at rules")
        for _ in range(2):  # a second run finds everything done
            ran = rules_api.post("/v1/clock/run", json={"as_of": now.isoformat()})
            assert ran.status_code == 200, ran.text
        coupon = eventually(
            lambda: [r for r in _rewards(rules_api, celebrant) if r["status"] == "done"],
            what="the birthday coupon",
        )
        assert [r["kind"] for r in coupon] == ["issue_coupon"]
        assert len(api.get(f"/v1/members/{celebrant}/coupons").json()["coupons"]) == 1
        assert api.get(f"/v1/members/{referrer}/balance").json()["available"] == 500

        events = topic_events(
            kafka_bootstrap, "loyalty.campaigns.events.v1", campaigns_pb2.CampaignEvent
        )
        mine = [e for e in events if e.member_id in (referrer, celebrant)]
        kinds = sorted((e.type, e.member_id == referrer) for e in mine)
        assert kinds == [
            ("PointsExpiring", False),
            ("RewardGranted", False),
            ("RewardGranted", True),
        ]
        expiring = next(e for e in mine if e.type == "PointsExpiring").points_expiring
        assert expiring.points == 300


def test_tier_progress_is_announced_once_near_the_next_threshold(
    club: Program, rules: RulesProcess, kafka_bootstrap: str
) -> None:
    with club.client() as api, rules_client(club, rules) as rules_api:
        member = enrol(api)
        earn(api, member, "4600.00")  # 400 short of Silver: within 10 % of 5000
        earn(api, member, "100.00")
        eventually(
            lambda: (t := tier_of(rules_api, member)) and t["points_to_next"] == 300,
            what="the progress at rules",
        )
        progress = [
            e.tier_progress
            for e in topic_events(kafka_bootstrap, "loyalty.tiers.events.v1", tiers_pb2.TierEvent)
            if e.member_id == member and e.type == "TierProgress"
        ]
        assert [(p.current_tier, p.next_tier, p.points_to_next) for p in progress] == [
            ("Bronze", "Silver", 400)
        ]


def test_librdkafka_and_protoc_read_the_tier_topic(
    club: Program, rules: RulesProcess, kafka_bootstrap: str
) -> None:
    with club.client() as api:
        member = enrol(api)
        earn(api, member, "5000.00")
    with httpx.Client(
        base_url=rules.url, timeout=30, headers={"Authorization": f"Bearer {club.admin_key}"}
    ) as rules_api:
        deadline = time.monotonic() + 180
        while (tier := rules_api.get(f"/v1/members/{member}/tier")).status_code != 200 or (
            tier.json()["tier"] != "Silver"
        ):
            assert time.monotonic() < deadline, f"the rules service never placed {member}"
            time.sleep(0.2)
    topic = "loyalty.tiers.events.v1"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "second-opinion-tiers"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        decoded = ""
        deadline = time.monotonic() + 60
        while 'to_tier: "Silver"' not in decoded:
            assert time.monotonic() < deadline, "the TierChanged never reached the topic"
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            if message.key() == member.encode():
                decoded = protoc_decode(
                    message.value(),
                    "loyalty.rules.v1.TierEvent",
                    "proto/loyalty/rules/v1/tiers.proto",
                )
                headers = dict(message.headers() or [])
                assert headers["event_id"].decode() in decoded
        assert 'type: "TierChanged"' in decoded
        assert 'from_tier: "Bronze"' in decoded
        assert f'member_id: "{member}"' in decoded
    finally:
        consumer.close()
