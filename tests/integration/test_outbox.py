"""The shared outbox (loyalty_common.outbox) against real PostgreSQL and the broker:
every committed event is published once per relay pass, in commit-safe order, with its
event id; an event appended twice is stored once; lag counts what is left."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from loyalty_common import outbox
from loyalty_common.db import create_pool
from loyalty_common.embedded import create_database, sibling_dsn


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"outbox_{uuid.uuid4().hex[:8]}"
    await create_database(database_url, name)
    pool = await create_pool(sibling_dsn(database_url, name), min_size=1, max_size=4)
    await pool.execute(outbox.OUTBOX_DDL)
    try:
        yield pool
    finally:
        await pool.close()


async def _append(conn: asyncpg.Connection, topic: str, key: str, n: int) -> uuid.UUID:
    event_id = uuid.uuid4()
    await outbox.append(
        conn,
        topic=topic,
        key=key,
        event_id=event_id,
        payload=f"event {n}".encode(),
        headers={"event_type": "TestHappened"},
    )
    return event_id


async def _read(bootstrap: str, topics: list[str], expected: int) -> list[tuple[str, bytes, dict]]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"outbox-test-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=2000,
    )
    await consumer.start()
    found: list[tuple[str, bytes, dict]] = []
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                found.extend(
                    (m.topic, m.value, {k: v.decode() for k, v in m.headers}) for m in messages
                )
        # Nothing more arrives.
        for messages in (await consumer.getmany(timeout_ms=1000)).values():
            found.extend(
                (m.topic, m.value, {k: v.decode() for k, v in m.headers}) for m in messages
            )
    finally:
        await consumer.stop()
    return found


async def test_relay_publishes_committed_events_in_commit_safe_order(
    pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    tiers, campaigns = f"test.outbox.tiers.{suffix}", f"test.outbox.campaigns.{suffix}"
    relay = outbox.OutboxRelay(
        pool,
        bootstrap=kafka_bootstrap,
        name="test",
        topics=[tiers, campaigns],
        partitions=1,
        replication_factor=1,
        idempotence=False,
        batch_size=3,
    )
    ids = []
    async with pool.acquire() as conn:
        for n in range(4):
            async with conn.transaction():
                ids.append(await _append(conn, tiers if n % 2 else campaigns, "member-1", n))
                # The same event appended again (a cause applied twice) is stored once.
                await outbox.append(
                    conn, topic=tiers, key="member-1", event_id=ids[-1], payload=b"again"
                )
    # A transaction that took its id first and commits last: nothing after it may be
    # published before it.
    slow = await pool.acquire()
    try:
        slow_tx = slow.transaction()
        await slow_tx.start()
        late = await _append(slow, tiers, "member-2", 99)
        async with pool.acquire() as conn, conn.transaction():
            after = await _append(conn, campaigns, "member-3", 100)
        while await relay.publish_batch():
            pass
        assert relay.published == 4  # stops at the open transaction
        assert (await relay.lag()).events == 1  # the committed one behind it
        await slow_tx.commit()
    finally:
        await pool.release(slow)
    while await relay.publish_batch():
        pass
    assert relay.published == 6
    assert (await relay.lag()).events == 0
    await relay.close()

    found = await _read(kafka_bootstrap, [tiers, campaigns], 6)
    published = [uuid.UUID(headers["event_id"]) for _, _, headers in found]
    assert sorted(published) == sorted([*ids, late, after])  # each exactly once
    assert all(h["event_type"] == "TestHappened" for _, _, h in found if h["event_id"] != str(late))
    by_topic = {
        topic: [uuid.UUID(h["event_id"]) for t, _, h in found if t == topic]
        for topic in (tiers, campaigns)
    }
    assert by_topic[tiers] == [ids[1], ids[3], late]
    assert by_topic[campaigns] == [ids[0], ids[2], after]


async def test_a_new_relay_name_starts_from_the_beginning_and_the_cursor_survives(
    pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"

    def relay(name: str) -> outbox.OutboxRelay:
        return outbox.OutboxRelay(
            pool,
            bootstrap=kafka_bootstrap,
            name=name,
            topics=[topic],
            partitions=1,
            replication_factor=1,
            idempotence=False,
        )

    async with pool.acquire() as conn:
        for n in range(3):
            await _append(conn, topic, "k", n)
    first = relay("a")
    assert await first.publish_batch() == 3
    again = relay("a")  # a restart: the stored cursor says all is published
    assert await again.publish_batch() == 0
    await first.close()
    await again.close()
    other = relay("b")
    assert (await other.lag()).events == 3
    stop = asyncio.Event()
    task = asyncio.create_task(other.run(stop))
    for _ in range(100):
        if other.published == 3:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert other.published == 3
