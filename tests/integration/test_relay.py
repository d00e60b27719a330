"""The outbox relay: every committed event reaches the topic, in each member's order,
even when transactions commit in another order than they took their positions."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import httpx
from ledger.adapters import repository
from ledger.adapters.repository import EventMeta
from ledger.domain.account import Purchase
from ledger.service_layer.program_document import ProgramDocument
from loyalty_common.db import connect

from tests.integration.conftest import Program, RelayProcess, enrol, idem, purchase, read_topic


async def _held_open_earn(database_url: str, program: Program, member: str) -> None:
    """A real ledger write whose transaction stays open a while before it commits."""
    conn = await connect(database_url)
    try:
        while True:
            try:
                async with conn.transaction():
                    await _locked_earn(conn, program, member)
                    await asyncio.sleep(random.uniform(0.3, 1.5))
                return
            except repository.StaleTransactionError:
                continue  # as the ledger does: restart with a fresh transaction id
    finally:
        await conn.close()


async def _locked_earn(conn: asyncpg.Connection, program: Program, member: str) -> None:
    loaded = await repository.load_member(
        conn, uuid.UUID(program.program_id), member_id=uuid.UUID(member), for_update=True
    )
    assert loaded is not None and loaded.account is not None
    config = ProgramDocument.model_validate(loaded.config).to_domain()
    now = datetime.now(UTC)
    account = loaded.account
    account.earn_purchase(
        Purchase(
            order_id=f"held-{uuid.uuid4().hex[:8]}",
            amount=Decimal(50),
            currency="NOK",
            occurred_at=now,
            channel="store",
        ),
        config,
        transaction_id=str(uuid.uuid4()),
        lot_id=str(uuid.uuid4()),
        now=now,
    )
    assert await repository.save_member(
        conn,
        uuid.UUID(program.program_id),
        account,
        next_period_end=account.next_period_end(config),
        meta=EventMeta(actor="test", correlation_id="held", recorded_at=now),
    )


async def _store_ids(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM events")}
    finally:
        await conn.close()


def test_concurrent_writers_with_late_commits_reach_the_topic_in_order(
    program: Program, database_url: str, relay: RelayProcess
) -> None:
    with program.client() as api:
        members = [enrol(api) for _ in range(10)]

    async def writer(n: int, client: httpx.AsyncClient) -> None:
        for i in range(15):
            member = random.choice(members)
            if (n * 15 + i) % 10 == 0:  # one write in ten is held open before it commits
                await _held_open_earn(database_url, program, member)
            else:
                response = await client.post(
                    f"/v1/members/{member}/earn", json=purchase("20"), headers=idem()
                )
                assert response.status_code == 201, response.text

    async def burst() -> None:
        async with program.async_client() as client:
            await asyncio.gather(*(writer(n, client) for n in range(20)))

    asyncio.run(burst())
    stored = asyncio.run(_store_ids(database_url))
    seen = asyncio.run(read_topic(relay.bootstrap, relay.topic, until_ids=stored))
    assert stored <= {event_id for _, _, event_id in seen}
    assert {event_id for _, _, event_id in seen} <= stored
    versions: dict[str, list[int]] = defaultdict(list)
    first_copy: set[str] = set()
    for stream, version, event_id in seen:
        if event_id not in first_copy:  # a redelivery repeats an id; order the first copies
            first_copy.add(event_id)
            versions[stream].append(version)
    for member in members:
        assert versions[member] == sorted(versions[member]), member
        assert versions[member] == list(range(1, len(versions[member]) + 1))
    health = httpx.get(f"{relay.url}/healthz").json()
    assert health["broker"] == "up"
    metrics = httpx.get(f"{relay.url}/metrics").text
    assert "loyalty_relay_broker_up 1.0" in metrics
    lag = [line for line in metrics.splitlines() if line.startswith("loyalty_relay_lag_events ")]
    assert lag and float(lag[0].split()[1]) < len(stored)
