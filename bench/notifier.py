"""`make bench`, notifier part: messages/second into the SMTP sink, and the time from an
earn's HTTP response to the tier upgrade's email.

Real processes on one machine, as in bench/rules.py: `loyalty serve`, `loyalty relay`,
`rules serve`, `notifier serve` and the embedded broker on a fresh embedded PostgreSQL
(or TEST_DATABASE_URL's server), and the SMTP and SMS sinks (`python -m
loyalty_common.sinks`) in a process of their own. The SMTP sink stamps each mail as it
takes it (`received_at` in its index.jsonl); this script reads those stamps, so how
often it looks does not change the figures, which use the wall clock on both sides.

1. Throughput. --messages members with an email address and email consent are
   enrolled; once the notifier knows them all, the program's settings drop the
   marketing cap (and quiet hours), and one OfferIssued per member, as the rules
   service publishes it (protobuf CampaignEvent keyed by member id, `event_id` header),
   goes to loyalty.campaigns.events.v1 in one burst. Measured from the first produce:
   when the delivery log (GET /v1/messages/stats?campaign_id=) holds a row for every
   event ("decided", polled every 50 ms), and when the last mail reaches the sink
   (messages/second).
2. Earn -> email. A background load of --rate earns/second (small purchases by members
   without an email address, which change no tier) runs throughout; meanwhile --members
   members with an email address each earn 5,000 NOK, past the default program's
   Silver threshold, one after the other and 250 ms apart. Latency = the sink's stamp
   on the member's TierChanged email - the earn's response.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from loadgen import Connection
from loyalty_common.db import connect
from loyalty_common.embedded import sibling_database
from loyalty_common.proto.loyalty.rules.v1 import campaigns_pb2
from loyalty_common.testing import command_path, free_port, running_process, service_key
from rules import (
    background,
    bench_program,
    earn_body,
    enrol,
    load_options,
    report,
    services,
)

CAMPAIGNS_TOPIC = "loyalty.campaigns.events.v1"
WAIT_SECONDS = 120.0


def mails(index: Path) -> list[dict[str, Any]]:
    """The SMTP sink's index so far, one record a mail (a line still being written is
    left for the next look)."""
    if not index.exists():
        return []
    lines = index.read_text(encoding="utf-8").splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith("\n")]


def stamp(mail: dict[str, Any]) -> float:
    return datetime.fromisoformat(mail["received_at"]).timestamp()


async def enrol_reachable(conns: list[Connection], addresses: list[str]) -> list[str]:
    """Members with these email addresses and email consent; their ids, in order."""
    ids = [""] * len(addresses)

    async def client(conn: Connection, first: int) -> None:
        for i in range(first, len(addresses), len(conns)):
            member = {
                "external_id": f"bench-{uuid.uuid4().hex[:12]}",
                "email": addresses[i],
                "consents": {"email": True},
            }
            status, payload = await conn.request(
                "POST", "/v1/members", json.dumps(member).encode(), str(uuid.uuid4())
            )
            assert status == 201, payload
            ids[i] = json.loads(payload)["member_id"]

    await asyncio.gather(*(client(conn, i) for i, conn in enumerate(conns)))
    return ids


async def settled(notifier_dsn: str, notifier: Connection, program_id: str, members: int) -> None:
    """Until the notifier knows `members` members of the program and has read every
    topic to the end, so that what follows is measured on its own."""
    deadline = time.monotonic() + WAIT_SECONDS
    db = await connect(notifier_dsn)
    try:
        while True:
            known = await db.fetchval(
                "SELECT count(*) FROM members WHERE program_id = $1", uuid.UUID(program_id)
            )
            status, payload = await notifier.request("GET", "/healthz")
            if known >= members and status == 200 and json.loads(payload)["consumer_lag"] == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the notifier knows {known} of {members} members")
            await asyncio.sleep(0.2)
    finally:
        await db.close()


async def no_cap(notifier: Connection) -> None:
    """No marketing cap and no quiet hours; the notifier answers 404 until it has seen
    the program."""
    deadline = time.monotonic() + WAIT_SECONDS
    body = json.dumps({"marketing_per_week": None, "quiet_hours": None}).encode()
    while (status := (await notifier.request("PUT", "/v1/settings", body))[0]) != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"PUT /v1/settings answers {status}")
        await asyncio.sleep(0.2)


def offer(program_id: str, member_id: str, campaign_id: str, n: int) -> campaigns_pb2.CampaignEvent:
    """An OfferIssued as the rules service's command worker announces an issued coupon."""
    now = datetime.now(UTC)
    event = campaigns_pb2.CampaignEvent(
        event_id=str(uuid.uuid4()),
        type="OfferIssued",
        program_id=program_id,
        member_id=member_id,
        correlation_id=f"bench-{campaign_id}",
        causation_id=campaign_id,
        offer_issued=campaigns_pb2.OfferIssued(
            campaign_id=campaign_id,
            campaign_name="Bench week",
            coupon_id=str(uuid.uuid4()),
            code=f"BENCH-{n:06d}",
            kind="amount",
            value="100.00",
            currency="NOK",
            points_cost=0,
        ),
    )
    event.occurred_at.FromDatetime(now)
    event.recorded_at.FromDatetime(now)
    event.offer_issued.valid_from.FromDatetime(now)
    event.offer_issued.valid_until.FromDatetime(now + timedelta(days=30))
    return event


async def throughput(
    conns: list[Connection],
    notifier: Connection,
    bootstrap: str,
    notifier_dsn: str,
    index: Path,
    program_id: str,
    count: int,
) -> None:
    addresses = [f"offer-{i}@bench.example.com" for i in range(count)]
    members = await enrol_reachable(conns, addresses)
    await no_cap(notifier)
    await settled(notifier_dsn, notifier, program_id, count)
    campaign_id = str(uuid.uuid4())
    events = [offer(program_id, m, campaign_id, i) for i, m in enumerate(members)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        started = time.time()
        sent = [
            await producer.send(
                CAMPAIGNS_TOPIC,
                key=event.member_id.encode(),
                value=event.SerializeToString(),
                headers=[
                    ("event_id", event.event_id.encode()),
                    ("event_type", b"OfferIssued"),
                    ("content-type", b"application/x-protobuf"),
                ],
            )
            for event in events
        ]
        await asyncio.gather(*sent)
        produced = time.time() - started
    finally:
        await producer.stop()

    decided: float | None = None
    stats: dict[str, Any] = {}
    while time.time() - started < WAIT_SECONDS:
        if decided is None:
            status, payload = await notifier.request(
                "GET", f"/v1/messages/stats?campaign_id={campaign_id}"
            )
            assert status == 200, payload
            stats = json.loads(payload)
            rows = sum(stats[k] for k in ("sent", "deferred", "pending", "failed"))
            if rows + sum(stats["suppressed"].values()) >= count:
                decided = time.time() - started
        if index.exists() and index.read_bytes().count(b"\n") >= count:
            break  # the sink holds nothing else yet
        await asyncio.sleep(0.05)
    wanted = set(addresses)
    arrived = [m for m in mails(index) if wanted.intersection(m["rcpt_tos"])]

    print(f"{count:,} OfferIssued events produced in {produced:.2f} s")
    if decided is not None:
        print(f"all {count:,} in the delivery log after {decided:.2f} s = {count / decided:,.0f}/s")
    else:
        print(f"delivery log after {WAIT_SECONDS:.0f} s: {stats}")
    if not arrived:
        print(f"no mail reached the SMTP sink within {WAIT_SECONDS:.0f} s")
        return
    times = sorted(stamp(m) - started for m in arrived)
    keys = {m["idempotency_key"] for m in arrived}
    print(
        f"{len(arrived):,}/{count:,} mails in the SMTP sink ({len(keys):,} distinct):"
        f" first after {times[0]:.2f} s, last after {times[-1]:.2f} s"
        f" = {len(arrived) / times[-1]:,.0f} messages/s"
    )


async def upgrades(
    conns: list[Connection],
    ledger: tuple[str, int, str],
    notifier: Connection,
    notifier_dsn: str,
    index: Path,
    program_id: str,
    before: int,
    members: int,
    rate: float,
    background_members: int,
) -> None:
    tag = uuid.uuid4().hex[:6]
    addresses = [f"tier-{tag}-{i}@bench.example.com" for i in range(members)]
    measured = await enrol_reachable(conns, addresses)
    crowd = await enrol(conns, background_members)
    await settled(notifier_dsn, notifier, program_id, before + members + background_members)
    till = Connection(*ledger)  # the measured earns never queue behind the load
    stop = asyncio.Event()
    load = asyncio.create_task(background(conns, crowd, rate, stop))
    await asyncio.sleep(3)  # let the background load settle
    responded: dict[str, float] = {}
    for member, address in zip(measured, addresses, strict=True):
        status, payload = await till.request(
            "POST", f"/v1/members/{member}/earn", earn_body("5000.00"), str(uuid.uuid4())
        )
        responded[address] = time.time()
        assert status == 201, payload
        await asyncio.sleep(0.25)
    arrivals: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while arrivals.keys() < responded.keys() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        for mail in mails(index):
            for address in responded.keys() & set(mail["rcpt_tos"]):
                if "Silver" in (mail["subject"] or ""):
                    arrivals.setdefault(address, stamp(mail))
    stop.set()
    done = await load
    await till.close()
    latencies = [arrivals[a] - responded[a] for a in addresses if a in arrivals]
    report("TierChanged email in the SMTP sink", latencies, members, done, rate)


async def measure(
    env: dict[str, str], program_id: str, key: str, index: Path, args: argparse.Namespace
) -> None:
    host, port = env["LEDGER_URL"].removeprefix("http://").split(":")
    conns = [Connection(host, int(port), key) for _ in range(16)]
    notifier = Connection("127.0.0.1", int(env["NOTIFIER_PORT"]), key)
    bootstrap, notifier_dsn = env["KAFKA_BOOTSTRAP_SERVERS"], env["NOTIFIER_DATABASE_URL"]
    print(f"## throughput: {args.messages:,} OfferIssued, one per consenting member, no cap")
    await throughput(conns, notifier, bootstrap, notifier_dsn, index, program_id, args.messages)
    for conn in [*conns, notifier]:
        await conn.close()  # idle for a while: the servers may have closed them; reopen
    print(f"## earn -> email: {args.members} members cross Silver (5,000 points)")
    await upgrades(
        conns,
        (host, int(port), key),
        notifier,
        notifier_dsn,
        index,
        program_id,
        args.messages,
        args.members,
        args.rate,
        args.background_members,
    )
    for conn in [*conns, notifier]:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    args = load_options(parser, 50, 50.0, 200).parse_args()
    print("# loyalty benchmark: notifier")
    with tempfile.TemporaryDirectory() as tmp, services(Path(tmp)) as env:
        work = Path(tmp)
        dsn = env["DATABASE_URL"]
        program_id, key = asyncio.run(bench_program(dsn, "Notifier Bench Club"))
        smtp_port, sms_port, notifier_port = free_port(), free_port(), free_port()
        notifier_url = f"http://127.0.0.1:{notifier_port}"
        env = {
            **env,
            "NOTIFIER_DATABASE_URL": sibling_database(
                dsn, f"loyalty_notifier_{uuid.uuid4().hex[:8]}"
            ),
            "NOTIFIER_PORT": str(notifier_port),
            "NOTIFIER_PUBLIC_URL": notifier_url,
            "NOTIFIER_LEDGER_KEY": service_key(dsn, "notifier-bench", ("members:write",)),
            "NOTIFIER_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "SMS_WEBHOOK_URL": f"http://127.0.0.1:{sms_port}/sms",
        }
        sinks = [sys.executable, "-m", "loyalty_common.sinks", "--dir", str(work / "sinks")]
        sinks += ["--smtp-port", str(smtp_port), "--sms-port", str(sms_port)]
        with (
            running_process(sinks, {}, f"http://127.0.0.1:{sms_port}/_health", work / "sinks.log"),
            running_process(
                [command_path("notifier"), "serve"],
                env,
                f"{notifier_url}/healthz",
                work / "notifier.log",
            ),
        ):
            print(f"program {program_id}; SMTP sink on port {smtp_port}")
            asyncio.run(measure(env, program_id, key, work / "sinks" / "index.jsonl", args))


if __name__ == "__main__":
    main()
