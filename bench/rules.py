"""`make bench`, rules part: from an earn's HTTP response to the TierChanged it causes.

The whole path runs as real processes on one machine: `loyalty serve` (ledger API),
`loyalty relay` (event store to Kafka), `rules serve` (consumer, tier engine, outbox
relay) and the embedded broker, on a fresh embedded PostgreSQL (or TEST_DATABASE_URL's
server). A background load of --rate earns/second (small purchases that change no
tier) runs throughout; meanwhile --members members each earn past the Silver threshold
one after the other, and a consumer on `loyalty.tiers.events.v1` notes when each
member's TierChanged to Silver arrives. Latency = arrival - earn response.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from ledger.entrypoints.cli import migrate
from ledger.service_layer.programs import create_program
from loadgen import Connection
from loyalty_common.db import connect
from loyalty_common.embedded import sibling_database
from loyalty_common.kafka import EmbeddedKafka
from loyalty_common.proto.loyalty.rules.v1 import tiers_pb2
from loyalty_common.testing import (
    command_path,
    free_port,
    fresh_database,
    running_process,
    service_key,
)

TIERS_TOPIC = "loyalty.tiers.events.v1"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_program(dsn: str, name: str = "Rules Bench Club") -> tuple[str, str]:
    """A new program with the default document (Bronze, Silver at 5,000, Gold); its id
    and admin key."""
    conn = await connect(dsn)
    try:
        created = await create_program(conn, name)
    finally:
        await conn.close()
    key = next(k["key"] for k in created.api_keys if "admin" in k["scopes"])
    return str(created.program_id), key


def earn_body(amount: str) -> bytes:
    return json.dumps(
        {
            "order_id": f"o-{uuid.uuid4().hex}",
            "amount": amount,
            "currency": "NOK",
            "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "channel": "store",
        }
    ).encode()


async def enrol(conns: list[Connection], count: int) -> list[str]:
    found: list[str] = []

    async def worker(conn: Connection) -> None:
        while len(found) < count:
            body = json.dumps({"external_id": f"bench-{uuid.uuid4().hex[:12]}"}).encode()
            status, payload = await conn.request("POST", "/v1/members", body, str(uuid.uuid4()))
            assert status == 201, payload
            found.append(json.loads(payload)["member_id"])

    await asyncio.gather(*(worker(c) for c in conns))
    return found[:count]


async def background(
    conns: list[Connection], members: list[str], rate: float, stop: asyncio.Event
) -> tuple[int, int, float]:
    """Small earns (no tier changes) at `rate`/s over `members`, paced per connection,
    until `stop`; a connection that falls behind sends as fast as it can."""
    started = time.perf_counter()
    counts = {"ok": 0, "sent": 0}
    interval = len(conns) / rate

    async def client(index: int, conn: Connection) -> None:
        due = started + index * interval / len(conns)
        n = index
        while not stop.is_set():
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status, _ = await conn.request(
                "POST",
                f"/v1/members/{members[n % len(members)]}/earn",
                earn_body("10.00"),
                str(uuid.uuid4()),
            )
            counts["sent"] += 1
            counts["ok"] += status == 201
            due += interval
            n += len(conns)

    await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    return counts["sent"], counts["ok"], time.perf_counter() - started


async def measure(
    ledger_url: str, key: str, bootstrap: str, members: int, rate: float, background_members: int
) -> None:
    host, port = ledger_url.removeprefix("http://").split(":")
    conns = [Connection(host, int(port), key) for _ in range(16)]
    crowd = await enrol(conns, background_members)
    measured = await enrol(conns, members)
    till = Connection(host, int(port), key)  # the measured earns never queue behind the load
    arrivals: dict[str, float] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    await consumer.topics()  # fetches the metadata partitions_for_topic reads
    partitions = [
        TopicPartition(TIERS_TOPIC, p) for p in consumer.partitions_for_topic(TIERS_TOPIC) or []
    ]
    assert partitions, f"{TIERS_TOPIC} does not exist; the rules service creates it"
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    wanted = set(measured)

    async def listen() -> None:
        while wanted - arrivals.keys():
            batches = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for messages in batches.values():
                for message in messages:
                    event = tiers_pb2.TierEvent.FromString(message.value)
                    if (
                        event.type == "TierChanged"
                        and event.tier_changed.to_tier == "Silver"
                        and event.member_id in wanted
                    ):
                        arrivals.setdefault(event.member_id, now)

    listener = asyncio.create_task(listen())
    stop = asyncio.Event()
    load = asyncio.create_task(background(conns, crowd, rate, stop))
    await asyncio.sleep(3)  # let the background load settle
    responded: dict[str, float] = {}
    for member in measured:
        status, payload = await till.request(
            "POST", f"/v1/members/{member}/earn", earn_body("5000.00"), str(uuid.uuid4())
        )
        responded[member] = time.perf_counter()
        assert status == 201, payload
        await asyncio.sleep(0.25)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(listener, 60)
    stop.set()
    done = await load
    await consumer.stop()
    for conn in [*conns, till]:
        await conn.close()
    latencies = [arrivals[m] - responded[m] for m in measured if m in arrivals]
    report(f"TierChanged on {TIERS_TOPIC}", latencies, members, done, rate)


def report(
    target: str, latencies: list[float], members: int, load: tuple[int, int, float], rate: float
) -> None:
    """The background rate achieved (`load` as `background` returns it) and the latency
    from the earn's response to `target`: p50, p99, max."""
    sent, ok, seconds = load
    print(
        f"background load: {ok:,} earns ({sent - ok} failed) in {seconds:.1f}s"
        f" = {ok / seconds:,.0f} earns/s (asked {rate:,.0f}/s)"
    )
    if not latencies:
        print(f"earn response -> {target}: none arrived within 60 s")
        return
    print(
        f"earn response -> {target}: {len(latencies)}/{members} arrived;"
        f" p50 {percentile(latencies, 0.50) * 1000:,.0f} ms, p99"
        f" {percentile(latencies, 0.99) * 1000:,.0f} ms, max {max(latencies) * 1000:,.0f} ms"
    )


@contextmanager
def services(work: Path) -> Iterator[dict[str, str]]:
    """A fresh, migrated database, the embedded broker, and `loyalty serve`, `loyalty
    relay` and `rules serve` on them, until the block ends; yields their environment
    (DATABASE_URL, LEDGER_URL, KAFKA_BOOTSTRAP_SERVERS, ...)."""
    with fresh_database() as dsn:
        migrate(dsn)
        broker = EmbeddedKafka(free_port(), work / "broker.log")
        rules_dsn = sibling_database(dsn, f"loyalty_rules_{uuid.uuid4().hex[:8]}")
        rules_key = service_key(dsn, "rules-bench")
        ledger_port, relay_port, rules_port = free_port(), free_port(), free_port()
        env = {
            "DATABASE_URL": dsn,
            "RULES_DATABASE_URL": rules_dsn,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "LEDGER_PORT": str(ledger_port),
            "RELAY_PORT": str(relay_port),
            "RULES_PORT": str(rules_port),
            "LEDGER_URL": f"http://127.0.0.1:{ledger_port}",
            "RULES_LEDGER_KEY": rules_key,
            "RULES_CLOCK_INTERVAL_SECONDS": "0",
            "LEDGER_CLOCK_INTERVAL_SECONDS": "0",
            "RULES_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "LOG_LEVEL": "WARNING",
        }
        ledger_url = f"http://127.0.0.1:{ledger_port}"
        try:
            with (
                running_process(
                    [command_path("loyalty"), "serve"], env, f"{ledger_url}/healthz", work / "l.log"
                ),
                running_process(
                    [command_path("loyalty"), "relay"],
                    env,
                    f"http://127.0.0.1:{relay_port}/healthz",
                    work / "relay.log",
                ),
                running_process(
                    [command_path("rules"), "serve"],
                    env,
                    f"http://127.0.0.1:{rules_port}/healthz",
                    work / "rules.log",
                ),
            ):
                yield env
        finally:
            broker.stop()


def load_options(
    parser: argparse.ArgumentParser, members: int, rate: float, background_members: int
) -> argparse.ArgumentParser:
    """--members (who cross Silver, measured), --rate and --background-members (the
    background earn load), with these defaults."""
    parser.add_argument("--members", type=int, default=members)
    parser.add_argument("--rate", type=float, default=rate)
    parser.add_argument("--background-members", type=int, default=background_members)
    return parser


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    args = load_options(parser, 100, 200.0, 500).parse_args()
    print("# loyalty benchmark: rules service")
    with tempfile.TemporaryDirectory() as tmp, services(Path(tmp)) as env:
        program_id, key = asyncio.run(bench_program(env["DATABASE_URL"]))
        print(f"program {program_id}; {args.members} members cross Silver (5,000 points)")
        asyncio.run(
            measure(
                env["LEDGER_URL"],
                key,
                env["KAFKA_BOOTSTRAP_SERVERS"],
                args.members,
                args.rate,
                args.background_members,
            )
        )


if __name__ == "__main__":
    main()
