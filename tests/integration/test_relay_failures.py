"""The relay under failure: SIGKILLed at random moments, and a broker that goes away.

Each test runs its own relay (its own cursor name and topic), so the session's relay
and these never share a cursor.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from loyalty_common.kafka import EmbeddedKafka
from loyalty_common.ports import free_port

from tests.integration.conftest import Program, enrol, idem, purchase, read_topic

LOYALTY = shutil.which("loyalty", path=str(Path(sys.executable).parent))


@contextmanager
def relay_process(
    database_url: str, bootstrap: str, name: str, topic: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    assert LOYALTY is not None
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RELAY_PORT": str(port),
        "RELAY_NAME": name,
        "LEDGER_TOPIC": topic,
        "KAFKA_PARTITIONS": "3",
        "RELAY_BATCH_SIZE": "200",
        "LOG_LEVEL": "WARNING",
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [LOYALTY, "relay"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "relay did not start"
            time.sleep(0.05)
        process.health_url = f"http://127.0.0.1:{port}/healthz"  # type: ignore[attr-defined]
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(15)


async def _store_ids(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM events")}
    finally:
        await conn.close()


async def _earns(program: Program, members: list[str], count: int) -> list[int]:
    limits = httpx.Limits(max_connections=32)
    async with program.async_client(limits=limits) as client:
        gate = asyncio.Semaphore(32)

        async def one() -> int:
            path = f"/v1/members/{random.choice(members)}/earn"
            body, headers = purchase("10"), idem()
            async with gate:
                for attempt in range(3):
                    # A connection the server dropped under load is retried as a till
                    # would: same Idempotency-Key, same body, so it earns once.
                    try:
                        response = await client.post(path, json=body, headers=headers)
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                        continue
                    return response.status_code
                raise AssertionError("unreachable")

        return await asyncio.gather(*(one() for _ in range(count)))


def test_relay_killed_at_random_moments_loses_nothing(
    program: Program, database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name, topic = f"kill-{uuid.uuid4().hex[:6]}", f"kill-{uuid.uuid4().hex[:6]}"
    with program.client() as api:
        members = [enrol(api) for _ in range(50)]
    kills = 0

    async def scenario() -> list[int]:
        # Each relay start costs seconds of CPU beside the earns: 1,500 earns see about
        # ten kills.
        burst = asyncio.create_task(_earns(program, members, 1500))
        nonlocal kills
        while not burst.done():
            with relay_process(
                database_url, kafka_bootstrap, name, topic, tmp_path / "relay.log"
            ) as relay:
                await asyncio.sleep(random.uniform(0.3, 1.5))
                relay.send_signal(signal.SIGKILL)
                relay.wait()
                kills += 1
        return await burst

    statuses = asyncio.run(scenario())
    assert statuses.count(201) == 1500
    assert kills >= 3
    with relay_process(database_url, kafka_bootstrap, name, topic, tmp_path / "relay.log"):
        stored = asyncio.run(_store_ids(database_url))
        seen = asyncio.run(read_topic(kafka_bootstrap, topic, until_ids=stored, timeout=120))
    ids = [event_id for _, _, event_id in seen]
    assert set(ids) == stored  # nothing missing, nothing foreign
    first: dict[str, list[int]] = {}
    firsts: set[str] = set()
    for stream, version, event_id in seen:
        if event_id not in firsts:
            firsts.add(event_id)
            first.setdefault(stream, []).append(version)
    for member in members:
        assert first[member] == sorted(first[member])


@pytest.mark.parametrize("outage_seconds", [3.0])
def test_broker_outage_keeps_earning_and_drains_after(
    program: Program, database_url: str, tmp_path: Path, outage_seconds: float
) -> None:
    port = free_port()
    broker = EmbeddedKafka(port, tmp_path / "broker.log")
    name, topic = f"outage-{uuid.uuid4().hex[:6]}", f"outage-{uuid.uuid4().hex[:6]}"
    with program.client() as api:
        members = [enrol(api) for _ in range(10)]
    with relay_process(
        database_url, broker.bootstrap, name, topic, tmp_path / "relay.log"
    ) as relay:
        health_url = relay.health_url  # type: ignore[attr-defined]
        before = asyncio.run(_store_ids(database_url))
        asyncio.run(read_topic(broker.bootstrap, topic, until_ids=before, timeout=60))
        broker.stop()
        statuses = asyncio.run(_earns(program, members, 300))
        assert statuses.count(201) == 300  # the ledger does not need the broker
        # Unacknowledged sends fail after the producer's request timeout (10 s).
        deadline = time.monotonic() + 30
        while (health := httpx.get(health_url, timeout=5).json())["broker"] != "down":
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        assert health["lag_events"] >= 300
        time.sleep(outage_seconds)
        # The broker comes back empty (it keeps nothing): everything since the outage
        # must arrive, because the cursor only moved past acknowledged batches.
        broker = EmbeddedKafka(port, tmp_path / "broker2.log")
        try:
            during = asyncio.run(_store_ids(database_url)) - before
            seen = asyncio.run(read_topic(broker.bootstrap, topic, until_ids=during, timeout=90))
            assert during <= {event_id for _, _, event_id in seen}
            deadline = time.monotonic() + 30
            while httpx.get(health_url, timeout=5).json()["lag_events"] > 0:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        finally:
            broker.stop()
