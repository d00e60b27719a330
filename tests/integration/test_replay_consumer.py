"""`loyalty replay consumer GROUP`: a stopped group applies every event again."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from loyalty_common.consumer import INBOX_DDL, EventConsumer, Message
from loyalty_common.db import create_pool
from prometheus_client import REGISTRY

LOYALTY = shutil.which("loyalty", path=str(Path(sys.executable).parent))


async def _consume_until(dsn: str, bootstrap: str, topic: str, group: str, rows: int) -> int:
    pool = await create_pool(dsn, min_size=1, max_size=2)

    async def handle(conn: asyncpg.Connection, message: Message) -> None:
        await conn.execute(
            "INSERT INTO replay_consumer_seen (grp, event_id) VALUES ($1, $2)",
            group,
            message.event_id,
        )

    consumer = EventConsumer(
        pool=pool,
        handler=handle,
        topics=[topic],
        group=group,
        bootstrap=bootstrap,
        consumer_options={"session_timeout_ms": 2000},
    )
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(300):
            seen = await pool.fetchval(
                "SELECT count(*) FROM replay_consumer_seen WHERE grp = $1", group
            )
            lags = [
                sample.value
                for metric in REGISTRY.collect()
                if metric.name == "loyalty_consumer_lag_messages"
                for sample in metric.samples
                if sample.labels["group"] == group
            ]
            # Done when every row is in and every offset committed (the gauge says 0).
            if seen >= rows and lags and set(lags) == {0.0}:
                return int(seen)
            await asyncio.sleep(0.1)
        raise AssertionError(f"{group}: {seen} of {rows} applied, lag {lags}")
    finally:
        await consumer.stop()
        await task
        await pool.close()


def test_a_rewound_group_applies_every_event_again(database_url: str, kafka_bootstrap: str) -> None:
    topic, group = f"rc-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"

    async def prepare() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(INBOX_DDL)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS replay_consumer_seen (grp text, event_id text)"
            )
        finally:
            await conn.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(
                    topic,
                    key=f"m{i % 2}".encode(),
                    value=b"x",
                    headers=[("event_id", str(uuid.uuid4()).encode())],
                )
        finally:
            await producer.stop()

    asyncio.run(prepare())
    assert asyncio.run(_consume_until(database_url, kafka_bootstrap, topic, group, 5)) == 5
    assert LOYALTY is not None
    result = subprocess.run(
        [LOYALTY, "replay", "consumer", group, "--database-url", database_url, "--topic", topic],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "forgot 5 processed events" in result.stderr
    assert asyncio.run(_consume_until(database_url, kafka_bootstrap, topic, group, 10)) == 10
