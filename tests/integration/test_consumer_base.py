"""The consumer base against a real broker (tansu) and PostgreSQL: effects applied exactly
once across crashes, poison messages dead-lettered with their key held back, clean stops."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from loyalty_common.consumer import (
    INBOX_DDL,
    EventConsumer,
    Message,
    RetryPolicy,
    blocked_keys,
    unblock,
)
from loyalty_common.db import create_pool
from loyalty_common.kafka import ensure_topic

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS consumer_test_effects (
    group_name text NOT NULL,
    event_id   text NOT NULL,   -- deliberately not unique: duplicates must show
    key        text,
    value      bytea
)
"""

FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)
# tansu holds a group's first join for about half the session timeout (5 s at Kafka's
# default of 10 s); short sessions keep each consumer start near one second.
QUICK_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    await pool.execute(INBOX_DDL)
    await pool.execute(EFFECTS_DDL)
    try:
        yield pool
    finally:
        await pool.close()


def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return f"test.consumer.{suffix}", f"test-group-{suffix}"


async def new_topic(bootstrap: str, partitions: int = 1) -> tuple[str, str]:
    topic, group = names()
    await ensure_topic(bootstrap, topic, partitions=partitions, replication_factor=1)
    return topic, group


async def produce(
    bootstrap: str, topic: str, messages: list[tuple[str, str, bool]], partition: int | None = None
) -> None:
    """(key, event id, whether the event id goes in a header); the value names it too."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        pending = []
        for key, event_id, in_header in messages:
            headers = [("event_id", event_id.encode())] if in_header else []
            pending.append(
                await producer.send(
                    topic,
                    key=key.encode(),
                    value=f"evt:{event_id}".encode(),
                    headers=[*headers, ("type", b"TestHappened")],
                    partition=partition,
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def id_from_value(message: Message) -> str:
    assert message.value is not None
    return message.value.decode().removeprefix("evt:")


def recording_handler(
    group: str,
    calls: list[str],
    *,
    poison: Collection[str] = (),
    slow: dict[str, float] | None = None,
    started: asyncio.Event | None = None,
) -> Callable[[asyncpg.Connection, Message], Awaitable[None]]:
    async def handle(conn: asyncpg.Connection, message: Message) -> None:
        calls.append(message.event_id)
        if slow and message.event_id in slow:
            if started is not None:
                started.set()
            await asyncio.sleep(slow[message.event_id])
        await conn.execute(
            "INSERT INTO consumer_test_effects (group_name, event_id, key, value)"
            " VALUES ($1, $2, $3, $4)",
            group,
            message.event_id,
            message.key_text,
            message.value,
        )
        if message.event_id in poison:
            raise ValueError(f"cannot apply {message.event_id}")

    return handle


def consumer_for(
    pool: asyncpg.Pool,
    bootstrap: str,
    topic: str,
    group: str,
    handler: Callable[[asyncpg.Connection, Message], Awaitable[None]],
    cls: type[EventConsumer] = EventConsumer,
    **kwargs: Any,
) -> EventConsumer:
    options: dict[str, Any] = {
        "retry": FAST,
        "event_id_of": id_from_value,
        "poll_timeout": 0.1,
        "consumer_options": QUICK_GROUP,
        **kwargs,
    }
    return cls(
        pool=pool, handler=handler, topics=[topic], group=group, bootstrap=bootstrap, **options
    )


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def effects(pool: asyncpg.Pool, group: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT event_id FROM consumer_test_effects WHERE group_name = $1 ORDER BY event_id", group
    )
    return [r["event_id"] for r in rows]


async def committed(
    bootstrap: str, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The group's committed offsets, asked by a client that does not join the group."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        return {tp: await probe.committed(tp) for tp in tps}
    finally:
        await probe.stop()


async def read_all(bootstrap: str, topic: str, count: int, timeout: float = 10.0) -> list[Any]:
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        reader.assign([TopicPartition(topic, 0)])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await reader.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await reader.stop()


def start(consumer: EventConsumer) -> asyncio.Task[None]:
    return asyncio.create_task(consumer.run())


def all_settled(
    consumer: EventConsumer, tps: list[TopicPartition]
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return consumer.lag() == dict.fromkeys(tps, 0)

    return check


async def test_every_message_applied_once_and_offsets_committed(
    pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    topic, group = await new_topic(kafka_bootstrap, partitions=2)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    sent = [(f"member-{i % 5}", f"e{i:03d}", i % 2 == 0) for i in range(20)]
    await produce(kafka_bootstrap, topic, sent)

    calls: list[str] = []
    consumer = consumer_for(pool, kafka_bootstrap, topic, group, recording_handler(group, calls))
    task = start(consumer)
    await wait_until(all_settled(consumer, tps))
    await consumer.stop()
    await task

    assert await effects(pool, group) == sorted(e for _, e, _ in sent)
    assert sorted(calls) == sorted(e for _, e, _ in sent)
    offsets = await committed(kafka_bootstrap, group, tps)
    assert sum(o or 0 for o in offsets.values()) == len(sent)

    later: list[str] = []
    again = consumer_for(pool, kafka_bootstrap, topic, group, recording_handler(group, later))
    task = start(again)
    await wait_until(all_settled(again, tps))  # fetched both partitions up to their ends
    await asyncio.sleep(0.3)
    await again.stop()
    await task
    assert later == []
    assert len(await effects(pool, group)) == len(sent)


class Crash(Exception):
    """Stands for the process dying between the database commit and the offset commit."""


class CrashingAfterCommit(EventConsumer):
    crash_on = ""

    async def on_applied(self, message: Message) -> None:
        if message.event_id == self.crash_on:
            raise Crash(message.event_id)


async def test_crash_between_database_and_offset_commit_applies_once(
    pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    topic, group = await new_topic(kafka_bootstrap)
    tp = TopicPartition(topic, 0)
    await produce(
        kafka_bootstrap, topic, [("m1", "a", True), ("m1", "b", True), ("m2", "c", False)]
    )

    calls: list[str] = []
    crashing = consumer_for(
        pool,
        kafka_bootstrap,
        topic,
        group,
        recording_handler(group, calls),
        cls=CrashingAfterCommit,
    )
    assert isinstance(crashing, CrashingAfterCommit)
    crashing.crash_on = "b"
    with pytest.raises(Crash):
        await asyncio.wait_for(crashing.run(), 20)
    assert calls == ["a", "b"]
    assert await effects(pool, group) == ["a", "b"]  # b's transaction committed
    assert await committed(kafka_bootstrap, group, [tp]) == {tp: 1}  # b's offset did not

    later: list[str] = []
    fresh = consumer_for(pool, kafka_bootstrap, topic, group, recording_handler(group, later))
    task = start(fresh)
    await wait_until(all_settled(fresh, [tp]))
    await fresh.stop()
    await task

    assert (fresh.counts.duplicates, fresh.counts.applied) == (1, 1)  # b skipped, c applied
    assert later == ["c"]
    assert await effects(pool, group) == ["a", "b", "c"]
    assert await committed(kafka_bootstrap, group, [tp]) == {tp: 3}


async def test_poison_message_is_dead_lettered_and_its_key_held_back(
    pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    topic, group = await new_topic(kafka_bootstrap)
    tp = TopicPartition(topic, 0)
    await produce(
        kafka_bootstrap,
        topic,
        [
            ("k1", "e1", True),
            ("k2", "e2", True),
            ("k1", "e3", True),
            ("k2", "e4", False),
            ("k3", "e5", True),
            ("k2", "e6", True),
        ],
    )

    calls: list[str] = []
    consumer = consumer_for(
        pool, kafka_bootstrap, topic, group, recording_handler(group, calls, poison={"e2"})
    )
    task = start(consumer)
    await wait_until(all_settled(consumer, [tp]))

    assert calls == ["e1", "e2", "e2", "e2", "e3", "e5"]  # 3 attempts; e4, e6 never run
    assert await effects(pool, group) == ["e1", "e3", "e5"]  # e2's attempts rolled back
    assert consumer.lag() == {tp: 0}
    assert await committed(kafka_bootstrap, group, [tp]) == {tp: 6}

    dead = await read_all(kafka_bootstrap, f"{topic}.dlq", 3)
    assert [(r.key, r.value) for r in dead] == [
        (b"k2", b"evt:e2"),
        (b"k2", b"evt:e4"),
        (b"k2", b"evt:e6"),
    ]
    failed, *held = [dict((k, v.decode()) for k, v in r.headers) for r in dead]
    assert failed["event_id"] == "e2" and failed["type"] == "TestHappened"
    assert failed["dlq.reason"] == "failed"
    assert failed["dlq.error_type"] == "builtins.ValueError"
    assert failed["dlq.error_message"] == "cannot apply e2"
    assert failed["dlq.attempts"] == "3"
    assert (
        failed["dlq.original_topic"],
        failed["dlq.original_partition"],
        failed["dlq.original_offset"],
        failed["dlq.group"],
    ) == (topic, "0", "1", group)
    assert [
        (h["event_id"], h["dlq.reason"], h["dlq.held_back_behind"], h["dlq.original_offset"])
        for h in held
    ] == [("e4", "held_back", "e2", "3"), ("e6", "held_back", "e2", "5")]

    async with pool.acquire() as conn:
        [row] = await blocked_keys(conn, group)
        assert (row.key, row.event_id, row.offset, row.held_back) == ("k2", "e2", 1, 2)
        assert row.reason == "ValueError: cannot apply e2"
        # The operator fixes the cause and unblocks; the key's new events apply again.
        assert await unblock(conn, group, "k2") == "e2"
        assert await unblock(conn, group, "k2") is None
    await produce(kafka_bootstrap, topic, [("k2", "e7", True)])
    await wait_until(lambda: _has(pool, group, "e7"))
    await consumer.stop()
    await task
    assert await committed(kafka_bootstrap, group, [tp]) == {tp: 7}


async def _has(pool: asyncpg.Pool, group: str, event_id: str) -> bool:
    return event_id in await effects(pool, group)


async def test_stop_finishes_the_message_in_hand_and_leaves_the_group(
    pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    topic, group = await new_topic(kafka_bootstrap)
    tp = TopicPartition(topic, 0)
    await produce(kafka_bootstrap, topic, [("m1", "slow", True), ("m1", "next", True)])

    calls: list[str] = []
    started = asyncio.Event()
    consumer = consumer_for(
        pool,
        kafka_bootstrap,
        topic,
        group,
        recording_handler(group, calls, slow={"slow": 1.0}, started=started),
    )
    task = start(consumer)
    await asyncio.wait_for(started.wait(), 15)
    began = time.monotonic()
    await consumer.stop()
    assert time.monotonic() - began >= 0.5  # it waited for the handler
    await task
    assert not consumer.running
    assert calls == ["slow"]
    assert await effects(pool, group) == ["slow"]
    assert await committed(kafka_bootstrap, group, [tp]) == {tp: 1}

    members = await group_members(kafka_bootstrap, group)
    assert members == []  # it left: the next member need not wait out its session

    later: list[str] = []
    fresh = consumer_for(pool, kafka_bootstrap, topic, group, recording_handler(group, later))
    task = start(fresh)
    await wait_until(all_settled(fresh, [tp]))
    await fresh.stop()
    await task
    assert later == ["next"]  # the finished message is not handled again
    assert await effects(pool, group) == ["next", "slow"]


async def group_members(bootstrap: str, group: str) -> list[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        [described] = response.groups
        return list(described[-1])  # (error, group, state, protocol type, protocol, members)
    finally:
        await admin.close()


async def test_rebalance_waits_for_the_message_in_hand(
    pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    topic, group = await new_topic(kafka_bootstrap, partitions=2)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    await produce(kafka_bootstrap, topic, [("m", "slow", True), ("m", "a2", True)], partition=0)
    await produce(kafka_bootstrap, topic, [("n", "b1", True), ("n", "b2", True)], partition=1)

    calls_a: list[str] = []
    calls_b: list[str] = []
    started = asyncio.Event()
    first = consumer_for(
        pool,
        kafka_bootstrap,
        topic,
        group,
        recording_handler(group, calls_a, slow={"slow": 1.5}, started=started),
    )
    task_a = start(first)
    await asyncio.wait_for(started.wait(), 15)
    # The newcomer's join revokes the first member's partitions while "slow" is in hand.
    second = consumer_for(pool, kafka_bootstrap, topic, group, recording_handler(group, calls_b))
    task_b = start(second)

    async def split_and_settled() -> bool:
        lags = {**first.lag(), **second.lag()}
        return bool(first.lag()) and bool(second.lag()) and lags == dict.fromkeys(tps, 0)

    await wait_until(split_and_settled, timeout=20)
    await asyncio.gather(first.stop(), second.stop())
    await asyncio.gather(task_a, task_b)

    assert sorted(calls_a + calls_b) == ["a2", "b1", "b2", "slow"]
    # "slow" was committed before its partition was released: nobody got it again.
    assert first.counts.duplicates == second.counts.duplicates == 0
    assert await committed(kafka_bootstrap, group, tps) == dict.fromkeys(tps, 2)


async def test_outage_retries_without_dead_lettering_until_stopped(
    pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    topic, group = await new_topic(kafka_bootstrap)
    tp = TopicPartition(topic, 0)
    await produce(kafka_bootstrap, topic, [("m1", "down", True)])
    tries: list[float] = []

    async def handle(conn: asyncpg.Connection, message: Message) -> None:
        tries.append(time.monotonic())
        raise ConnectionResetError("the mail relay went away")

    consumer = consumer_for(
        pool,
        kafka_bootstrap,
        topic,
        group,
        handle,
        retry=RetryPolicy(attempts=2, base_delay=0.05, max_delay=5),
    )
    task = start(consumer)

    async def backing_off() -> bool:
        return len(tries) >= 5  # past attempts=2: outages do not count

    await wait_until(backing_off)
    began = time.monotonic()
    await consumer.stop()  # cuts the backoff short instead of waiting it out
    await task
    assert time.monotonic() - began < 2
    assert consumer.counts.dead_lettered == 0
    assert await committed(kafka_bootstrap, group, [tp]) == {tp: None}  # redelivered later
    assert await read_all(kafka_bootstrap, f"{topic}.dlq", 1, timeout=0.5) == []


async def test_stop_during_the_join_leaves_nothing_behind(
    pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    topic, group = await new_topic(kafka_bootstrap)
    consumer = consumer_for(pool, kafka_bootstrap, topic, group, recording_handler(group, []))
    task = start(consumer)
    await asyncio.sleep(0.2)
    await consumer.stop()
    await asyncio.wait_for(task, 10)
    assert not consumer.running and consumer.lag() == {}
    assert await group_members(kafka_bootstrap, group) == []
