"""`make bench`, event backbone part: projection rebuild rate and relay throughput.

One run on a fresh embedded PostgreSQL (or TEST_DATABASE_URL's server):
1. Synthesise --events events (members of 100 events: an enrolment and purchase earns)
   with the domain model and COPY them into the event store.
2. `loyalty replay projections`, the real command: events/second folded and swapped in
   (aim: at least 20,000 events/second on 1,000,000 events).
3. `loyalty relay`, the real process, against the embedded broker: events/second from
   the event store to broker acknowledgement, until its lag is zero.
4. The consumer base (EventConsumer) with a no-op handler over --consumer-messages
   messages: messages/second, each with its inbox row, transaction and offset commit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from ledger.adapters.codec import encode_event
from ledger.domain.account import MemberAccount, Purchase
from ledger.domain.events import MemberEnrolled, occurred_at
from ledger.entrypoints.cli import migrate
from ledger.service_layer.program_document import ProgramDocument
from ledger.service_layer.programs import create_program
from loyalty_common.consumer import INBOX_DDL, EventConsumer, Message
from loyalty_common.db import connect, create_pool
from loyalty_common.kafka import EmbeddedKafka, ensure_topic
from loyalty_common.ports import free_port
from loyalty_common.testing import fresh_database

LOYALTY = shutil.which("loyalty", path=str(Path(sys.executable).parent))
PER_MEMBER = 100


async def synthesise(dsn: str, events: int) -> tuple[int, float]:
    conn = await connect(dsn)
    try:
        program = await create_program(conn, "Bench Club")
        row = await conn.fetchrow(
            "SELECT config FROM programs WHERE program_id = $1", program.program_id
        )
        config = ProgramDocument.model_validate(row["config"]).to_domain()
        started = time.perf_counter()
        start = datetime(2026, 1, 1, tzinfo=UTC)
        records: list[tuple[object, ...]] = []
        written = 0
        for m in range(events // PER_MEMBER):
            member = str(uuid.uuid4())
            account = MemberAccount.enrol(
                MemberEnrolled(member_id=member, external_id=f"b{m}", enrolled_at=start)
            )
            for i in range(PER_MEMBER - 1):
                at = start + timedelta(minutes=i)
                account.earn_purchase(
                    Purchase(
                        order_id=f"o{i}",
                        amount=Decimal("123.45"),
                        currency="NOK",
                        occurred_at=at,
                        channel="store",
                    ),
                    config,
                    transaction_id=str(uuid.uuid4()),
                    lot_id=str(uuid.uuid4()),
                    now=at,
                )
            for version, event in enumerate(account.new_events, start=1):
                event_type, data = encode_event(event)
                at = occurred_at(event) or start
                records.append(
                    (
                        uuid.uuid4(),
                        program.program_id,
                        member,
                        version,
                        event_type,
                        data,
                        at,
                        at,
                        "bench",
                        "bench",
                    )
                )
            if len(records) >= 50_000:
                written += await _copy(conn, records)
        written += await _copy(conn, records)
        return written, time.perf_counter() - started
    finally:
        await conn.close()


async def _copy(conn: object, records: list[tuple[object, ...]]) -> int:
    count = len(records)
    await conn.copy_records_to_table(  # type: ignore[attr-defined]
        "events",
        records=records,
        columns=[
            "event_id",
            "program_id",
            "stream_id",
            "version",
            "type",
            "data",
            "occurred_at",
            "recorded_at",
            "actor",
            "correlation_id",
        ],
    )
    records.clear()
    return count


def rebuild(dsn: str) -> tuple[float, str]:
    assert LOYALTY is not None
    started = time.perf_counter()
    result = subprocess.run(
        [LOYALTY, "replay", "projections"],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": dsn},
        timeout=3600,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return seconds, result.stderr.strip().splitlines()[-1]


def relay(dsn: str, total: int, workdir: Path) -> tuple[int, float]:
    assert LOYALTY is not None
    broker = EmbeddedKafka(free_port(), workdir / "broker.log")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "RELAY_PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "RELAY_NAME": "bench",
    }
    with (workdir / "relay.log").open("wb") as log:
        process = subprocess.Popen(
            [LOYALTY, "relay"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        first: tuple[float, int] | None = None
        while True:
            try:
                health = httpx.get(url, timeout=30).json()
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            now = time.perf_counter()
            if first is None and health["published"] > 0:
                first = (now, health["published"])
            if health["published"] >= total and first is not None:
                return health["published"] - first[1], now - first[0]
            assert process.poll() is None, (workdir / "relay.log").read_text()[-2000:]
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(30)
        broker.stop()


async def consume(dsn: str, bootstrap: str, count: int) -> tuple[int, float]:
    topic, group = f"bench-{uuid.uuid4().hex[:8]}", "bench-noop"
    await ensure_topic(bootstrap, topic, partitions=3, replication_factor=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        pending = [
            await producer.send(
                topic,
                key=f"m{i % 500}".encode(),
                value=b"x",
                headers=[("event_id", str(uuid.uuid4()).encode())],
            )
            for i in range(count)
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    conn = await connect(dsn)
    await conn.execute(INBOX_DDL)
    await conn.close()
    pool = await create_pool(dsn, min_size=1, max_size=2)
    done = asyncio.Event()
    handled = 0
    started = 0.0

    async def noop(conn: object, message: Message) -> None:
        nonlocal handled, started
        if handled == 0:
            started = time.perf_counter()
        handled += 1
        if handled >= count:
            done.set()

    consumer = EventConsumer(
        pool=pool,
        handler=noop,
        topics=[topic],
        group=group,
        bootstrap=bootstrap,
        consumer_options={"session_timeout_ms": 2000},
    )
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
        return handled, time.perf_counter() - started
    finally:
        await consumer.stop()
        await task
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--consumer-messages", type=int, default=20_000)
    args = parser.parse_args()
    print("# loyalty ledger benchmark: event backbone")
    with fresh_database() as dsn, tempfile.TemporaryDirectory() as tmp:
        migrate(dsn)
        written, seconds = asyncio.run(synthesise(dsn, args.events))
        print(f"synthesised {written:,} events in {seconds:.0f}s")
        rebuild_seconds, line = rebuild(dsn)
        rate = re.search(r"\((\d+) events/s\)", line)
        folded = int(rate.group(1)) if rate else 0
        print(f"loyalty replay projections: {line}")
        verdict = "meets" if folded >= 20_000 else "BELOW"
        print(
            f"  wall {rebuild_seconds:.1f}s incl. start-up; {folded:,} events/s"
            f" (aim >= 20,000): {verdict} the aim"
        )
        published, relay_seconds = relay(dsn, written, Path(tmp))
        print(
            f"loyalty relay: {published:,} events to broker acknowledgement in"
            f" {relay_seconds:.1f}s = {published / relay_seconds:,.0f} events/s"
        )
        broker = EmbeddedKafka(free_port(), Path(tmp) / "consumer-broker.log")
        try:
            handled, seconds = asyncio.run(consume(dsn, broker.bootstrap, args.consumer_messages))
        finally:
            broker.stop()
        print(
            f"consumer base, no-op handler: {handled:,} messages in {seconds:.1f}s ="
            f" {handled / seconds:,.0f} messages/s (one at a time: inbox row, transaction and"
            " offset commit each)"
        )


if __name__ == "__main__":
    main()
