"""The notifier killed at random moments: 1,000 offer events, exactly one email each.

A notifier process of its own (own database, own consumer group, own SMTP sink) learns
1,000 members of a new program from the ledger topic, half of them consenting to email,
and then gets one ``OfferIssued`` per member on the campaign topic, as the rules service
publishes them. While it decides and sends them it is killed with SIGKILL (the whole
process group) at several random moments and started again on the same database and
group. Then:

- every consenting member got exactly one message: all deliveries the SMTP sink holds
  for them carry one and the same Message-ID (the message's id for that event and
  channel, which is the provider's idempotency key). A crash between the server
  accepting a mail and the notifier's commit sends that same message again; those raw
  repeats are counted and printed (at most one per delivery lane and kill, since each
  message commits on its own), and a provider that honours the key delivers once;
- non-consenting members got none;
- the delivery log has exactly one row per (event, email channel): ``sent`` for the
  consenting, ``suppressed`` with reason ``no_consent`` for the others, and the
  notifier published one MessageSent or MessageSuppressed for each.

The kill moments are random points in the work (decided messages plus sent ones) with a
random delay after each, drawn from a seed that is printed (``NOTIFIER_CRASH_SEED=<n>``
repeats a run's choices): points in the work rather than bare delays, so that every
kill lands while there is work in hand, however fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from loyalty_common.embedded import sibling_database
from loyalty_common.kafka import ensure_topic
from loyalty_common.proto.loyalty.rules.v1 import campaigns_pb2
from loyalty_common.sinks import SmtpSink
from loyalty_common.testing import command_path, free_port, service_key, wait_healthy
from notifier.adapters.publishing import message_id
from notifier.service_layer.delivery import DeliveryWorker
from rules.adapters.publishing import derived_id

from tests.integration.conftest import Program, RelayProcess, new_program

MEMBERS = 1_000
KILLS = 5
LEDGER = "loyalty.ledger.events.v1"
TIERS = "loyalty.tiers.events.v1"
CAMPAIGNS = "loyalty.campaigns.events.v1"
PARTITIONS = 3
LOCALES = ("nb", "sv", "da", "en")
STALL_SECONDS = 60  # no change in the campaign's statistics for this long: stuck
SETTLE_SECONDS = 240


@dataclass
class KillableNotifier:
    """``notifier serve`` in a process group of its own, to be SIGKILLed and restarted on
    the same database, consumer group and port."""

    env: dict[str, str]
    url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, timeout: float = 60.0) -> None:
        assert self.process is None
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n----- start {self.starts} -----\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [command_path("notifier"), "serve"],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a kill takes any children
            )
        wait_healthy(self.process, f"{self.url}/healthz", self.log_path, timeout)

    def kill(self) -> None:
        """SIGKILL, no goodbye: no offset commit, no LeaveGroup, open transactions cut."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # gone already
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None


@dataclass
class Member:
    member_id: str
    email: str
    consents: bool
    event_id: str = ""


@dataclass
class Kill:
    after_seconds: float
    target: int
    delay: float
    progress: int  # decided + sent, just before the kill
    decided: int
    sent: int


@dataclass
class Run:
    seed: int
    campaign_id: str
    members: list[Member]
    kills: list[Kill] = field(default_factory=list)


async def _start_at_the_end(bootstrap: str, group: str) -> None:
    """Commit ``group``'s offsets at the end of the topics it follows: the notifier then
    reads what this test causes, not the whole history other tests left on them."""
    for topic in (LEDGER, TIERS, CAMPAIGNS):
        await ensure_topic(bootstrap, topic, partitions=PARTITIONS, replication_factor=1)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, p)
            for topic in (LEDGER, TIERS, CAMPAIGNS)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        assert partitions, "the topics have no partitions"
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in ends.items()})
    finally:
        await consumer.stop()


async def _enrol_all(program: Program, tag: str) -> list[Member]:
    """Enrol ``MEMBERS`` members through the ledger API, a bounded number at a time."""
    gate = asyncio.Semaphore(16)
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)

    async def one(client: httpx.AsyncClient, i: int) -> Member:
        email = f"m{i:04d}-{tag}@example.no"
        consents = i % 2 == 0
        body = {
            "external_id": f"crash-{tag}-{i}",
            "email": email,
            "locale": LOCALES[i % len(LOCALES)],
            "consents": {"email": consents},
        }
        async with gate:
            for attempt in range(5):
                try:
                    response = await client.post(
                        "/v1/members",
                        json=body,
                        headers={"Idempotency-Key": f"enrol-{tag}-{i}"},
                    )
                except httpx.TransportError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5)
                    continue
                break
        assert response.status_code == 201, response.text
        return Member(str(response.json()["member_id"]), email, consents)

    async with program.async_client(limits=limits) as client:
        return list(await asyncio.gather(*(one(client, i) for i in range(MEMBERS))))


def _offer(program_id: str, campaign_id: str, member: Member, now: datetime) -> bytes:
    """An OfferIssued as the rules service announces it (its command worker, once the
    ledger issued the coupon), with the event id the rules service derives."""
    event = campaigns_pb2.CampaignEvent(
        event_id=member.event_id,
        type="OfferIssued",
        program_id=program_id,
        member_id=member.member_id,
        correlation_id=f"crash-test-{campaign_id}",
        causation_id=str(uuid.uuid4()),
    )
    event.occurred_at.FromDatetime(now)
    event.recorded_at.FromDatetime(now)
    offer = event.offer_issued
    offer.campaign_id, offer.campaign_name = campaign_id, "Vinterkampanje"
    offer.coupon_id, offer.code = str(uuid.uuid4()), f"VINTER-{uuid.uuid4().hex[:6].upper()}"
    offer.kind, offer.value, offer.currency, offer.points_cost = "amount", "50.00", "NOK", 0
    offer.valid_from.FromDatetime(now)
    offer.valid_until.FromDatetime(now + timedelta(days=30))
    return bytes(event.SerializeToString())


async def _produce_offers(bootstrap: str, program_id: str, run: Run) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        now = datetime.now(UTC)
        sent = [
            await producer.send(
                CAMPAIGNS,
                key=member.member_id.encode(),
                value=_offer(program_id, run.campaign_id, member, now),
                headers=[
                    ("event_id", member.event_id.encode()),
                    ("event_type", b"OfferIssued"),
                    ("content-type", b"application/x-protobuf"),
                ],
            )
            for member in run.members
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _progress(conn: asyncpg.Connection, campaign_id: str) -> tuple[int, int]:
    """(messages decided, messages sent) for the campaign, as committed."""
    row = await conn.fetchrow(
        """SELECT count(*) AS decided, count(*) FILTER (WHERE status = 'sent') AS sent
             FROM messages WHERE campaign_id = $1""",
        uuid.UUID(campaign_id),
    )
    assert row is not None
    return int(row["decided"]), int(row["sent"])


async def _poll(probe: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def _kill_while_working(
    notifier: KillableNotifier, notifier_db: str, run: Run, rng: random.Random
) -> None:
    """Kill the notifier ``KILLS`` times, each at a random point of the work (one in each
    of ``KILLS`` equal slices of 2 % to 85 % of it) plus a random 0 to 200 ms, and start
    it again each time."""
    consenting = sum(m.consents for m in run.members)
    total = MEMBERS + consenting  # every offer decided, every consenting one sent
    low, high = int(total * 0.02), int(total * 0.85)
    width = (high - low) / KILLS
    targets = [int(low + width * (k + rng.random())) for k in range(KILLS)]
    delays = [rng.uniform(0.0, 0.2) for _ in range(KILLS)]
    print(f"kill targets (of {total} units of work) {targets}, delays {delays}")
    began = time.monotonic()
    conn = await asyncpg.connect(notifier_db)
    try:
        for target, delay in zip(targets, delays, strict=True):

            async def reached(target: int = target) -> bool:
                decided, sent = await _progress(conn, run.campaign_id)
                return decided + sent >= target

            await _poll(reached, 120, f"{target} units of work done", interval=0.02)
            await asyncio.sleep(delay)
            decided, sent = await _progress(conn, run.campaign_id)
            notifier.kill()
            kill = Kill(time.monotonic() - began, target, delay, decided + sent, decided, sent)
            run.kills.append(kill)
            notifier.start()
            print(
                f"SIGKILL {len(run.kills)}: {kill}, healthy again in"
                f" {time.monotonic() - began - kill.after_seconds:.1f} s"
            )
    finally:
        await conn.close()


async def _settled(
    notifier: KillableNotifier, program: Program, campaign_id: str
) -> dict[str, Any]:
    """The campaign's statistics once every offer is decided and nothing is pending.
    Fails when they stop changing for ``STALL_SECONDS`` (a lost event never comes) or
    after ``SETTLE_SECONDS`` in all, saying where they stood."""
    async with httpx.AsyncClient(
        base_url=notifier.url,
        timeout=10,
        headers={"Authorization": f"Bearer {program.admin_key}"},
    ) as client:
        began = changed = time.monotonic()
        last: dict[str, Any] = {}
        while True:
            response = await client.get("/v1/messages/stats", params={"campaign_id": campaign_id})
            assert response.status_code == 200, response.text
            stats: dict[str, Any] = response.json()
            decided = stats["sent"] + stats["pending"] + stats["deferred"] + stats["failed"]
            decided += sum(stats["suppressed"].values())
            # More than one decision per offer would be a bug, left to the assertions.
            if decided >= MEMBERS and stats["pending"] == 0 and stats["deferred"] == 0:
                return stats
            now = time.monotonic()
            if stats != last:
                last, changed = stats, now
            if now - changed > STALL_SECONDS or now - began > SETTLE_SECONDS:
                raise AssertionError(
                    f"the notifier stopped short: {decided} of {MEMBERS} offers decided,"
                    f" unchanged for {now - changed:.0f} s: {stats}"
                )
            await asyncio.sleep(0.25)


async def _configure(notifier: KillableNotifier, program: Program) -> None:
    """No frequency cap and no quiet hours, once the notifier knows the program."""
    async with httpx.AsyncClient(
        base_url=notifier.url,
        timeout=10,
        headers={"Authorization": f"Bearer {program.admin_key}"},
    ) as client:

        async def configured() -> bool:
            response = await client.put(
                "/v1/settings", json={"marketing_per_week": None, "quiet_hours": None}
            )
            return response.status_code == 200

        await _poll(configured, 60, "the program at the notifier", interval=0.2)


async def _knows_members(notifier_db: str, program_id: str) -> None:
    conn = await asyncpg.connect(notifier_db)
    try:

        async def known() -> bool:
            count = await conn.fetchval(
                "SELECT count(*) FROM members WHERE program_id = $1", uuid.UUID(program_id)
            )
            return bool(count == MEMBERS)

        await _poll(known, 180, f"the notifier to know all {MEMBERS} members", interval=0.2)
    finally:
        await conn.close()


async def _delivery_log(
    notifier_db: str, program_id: str, members: list[Member]
) -> tuple[list[asyncpg.Record], dict[str, int], int, int]:
    conn = await asyncpg.connect(notifier_db)
    try:
        rows = await conn.fetch(
            """SELECT message_id, event_id, channel, member_id, status, reason, recipient
                 FROM messages WHERE program_id = $1 AND event_type = 'OfferIssued'""",
            uuid.UUID(program_id),
        )
        published = await conn.fetch(
            """SELECT headers->>'event_type' AS type, count(*) AS n FROM outbox
                WHERE key = ANY($1::text[]) GROUP BY 1""",
            [m.member_id for m in members],
        )
        waiting = await conn.fetchval(
            "SELECT count(*) FROM waiting_events WHERE member_id = ANY($1::uuid[])",
            [uuid.UUID(m.member_id) for m in members],
        )
        blocked = await conn.fetchval("SELECT count(*) FROM consumer_blocked_keys")
    finally:
        await conn.close()
    return list(rows), {r["type"]: r["n"] for r in published}, int(waiting), int(blocked)


@pytest.fixture
def killable_notifier(
    database_url: str,
    ledger_url: str,
    relay: RelayProcess,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> Iterator[tuple[KillableNotifier, SmtpSink]]:
    """A notifier of this test's own, not started yet, and its SMTP sink."""
    group = f"notifier-crash-{uuid.uuid4().hex[:8]}"
    asyncio.run(_start_at_the_end(kafka_bootstrap, group))
    notifier_db = sibling_database(database_url, f"notifier_crash_{uuid.uuid4().hex[:8]}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with SmtpSink(tmp_path / "mail") as smtp:
        notifier = KillableNotifier(
            env={
                "NOTIFIER_DATABASE_URL": notifier_db,
                "NOTIFIER_PORT": str(port),
                "NOTIFIER_PUBLIC_URL": url,
                "NOTIFIER_CONSUMER_GROUP": group,
                "LEDGER_URL": ledger_url,
                "NOTIFIER_LEDGER_KEY": service_key(
                    database_url, f"notifier-crash-{uuid.uuid4().hex[:6]}", ("members:write",)
                ),
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "KAFKA_PARTITIONS": str(PARTITIONS),
                "NOTIFIER_KAFKA_SESSION_TIMEOUT_MS": "2000",
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(smtp.port),
                "LOG_LEVEL": "WARNING",
            },
            url=url,
            log_path=tmp_path / "notifier.log",
        )
        try:
            yield notifier, smtp
        finally:
            notifier.stop()


@pytest.fixture
def crash_club(
    database_url: str, ledger_url: str, killable_notifier: tuple[KillableNotifier, SmtpSink]
) -> Program:
    """A new program, created after the notifier's group was set to the topics' end."""
    return new_program(database_url, ledger_url, "Krasj Klubb")


def test_sigkilled_notifier_sends_each_consenting_member_exactly_one_offer(
    crash_club: Program,
    killable_notifier: tuple[KillableNotifier, SmtpSink],
    kafka_bootstrap: str,
) -> None:
    notifier, smtp = killable_notifier
    notifier_db = notifier.env["NOTIFIER_DATABASE_URL"]
    seed = int(os.environ.get("NOTIFIER_CRASH_SEED") or random.randrange(2**32))
    print(f"NOTIFIER_CRASH_SEED={seed}")
    rng = random.Random(seed)
    began = time.monotonic()

    notifier.start()
    members = asyncio.run(_enrol_all(crash_club, uuid.uuid4().hex[:6]))
    enrolled = time.monotonic()
    print(f"enrolled {MEMBERS} members in {enrolled - began:.1f} s")
    asyncio.run(_configure(notifier, crash_club))
    asyncio.run(_knows_members(notifier_db, crash_club.program_id))
    known = time.monotonic()

    campaign_id = str(uuid.uuid4())
    for member in members:
        member.event_id = str(derived_id("announce", f"offer:{campaign_id}:{member.member_id}"))
    run = Run(seed, campaign_id, members)
    asyncio.run(_produce_offers(kafka_bootstrap, crash_club.program_id, run))
    asyncio.run(_kill_while_working(notifier, notifier_db, run, rng))
    stats = asyncio.run(_settled(notifier, crash_club, campaign_id))
    done = time.monotonic()
    print(
        f"enrolled {MEMBERS} in {enrolled - began:.1f} s, known to the notifier after"
        f" {known - began:.1f} s, offers settled after {done - known:.1f} s"
        f" with {len(run.kills)} kills"
    )
    assert len(run.kills) == KILLS
    total = MEMBERS + sum(m.consents for m in members)
    assert all(k.progress < total for k in run.kills), "a kill came after the work was done"

    # The SMTP sink: per consenting member one Message-ID, the one for their offer.
    raw: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for mail in smtp.messages():
        for recipient in mail["rcpt_tos"]:
            raw[recipient].append(mail)
    repeats = Counter(
        {m.email: len(raw[m.email]) - 1 for m in members if len(raw.get(m.email, [])) > 1}
    )
    print(
        f"raw repeats (the same message sent again after a kill): {sum(repeats.values())}"
        f" to {len(repeats)} members"
    )
    # Each message commits on its own: a kill can catch at most one accepted, uncommitted
    # message per delivery lane.
    assert sum(repeats.values()) <= KILLS * DeliveryWorker.LANES, repeats
    missing = [m.email for m in members if m.consents and not raw.get(m.email)]
    unwanted = [m.email for m in members if not m.consents and raw.get(m.email)]
    split = {
        m.email: sorted({str(mail["message_id"]) for mail in raw[m.email]})
        for m in members
        if len({mail["message_id"] for mail in raw.get(m.email, [])}) > 1
    }
    wrong: dict[str, list[tuple[str | None, str | None]]] = {}
    for member in members:
        expected = str(message_id(member.event_id, "email"))
        ids = {(m["message_id"], m["idempotency_key"]) for m in raw.get(member.email, [])}
        if member.consents and ids != {(f"<{expected}@loyalty-notifier>", expected)}:
            wrong[member.email] = sorted(ids, key=str)
    assert not missing, f"{len(missing)} consenting members got no mail: {missing[:10]}"
    assert not unwanted, f"{len(unwanted)} members without consent got mail: {unwanted[:10]}"
    assert not split, (
        f"{len(split)} members got more than one distinct message: {list(split.items())[:5]}"
    )
    assert not wrong, (
        f"{len(wrong)} consenting members did not get their offer's message (Message-ID and"
        f" X-Idempotency-Key from its event id): {list(wrong.items())[:5]}"
    )

    # The delivery log: one row per (event, email), sent or suppressed for want of consent.
    rows, published, waiting, blocked = asyncio.run(
        _delivery_log(notifier_db, crash_club.program_id, members)
    )
    by_event: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        by_event[str(row["event_id"])].append(row)
    assert len(rows) == MEMBERS
    for member in members:
        found = by_event[member.event_id]
        assert len(found) == 1, f"{member.member_id}: {found}"
        row = found[0]
        assert row["channel"] == "email" and str(row["member_id"]) == member.member_id
        assert str(row["message_id"]) == str(message_id(member.event_id, "email"))
        assert row["recipient"] == member.email
        if member.consents:
            assert (row["status"], row["reason"]) == ("sent", None), dict(row)
        else:
            assert (row["status"], row["reason"]) == ("suppressed", "no_consent"), dict(row)
    consenting = sum(m.consents for m in members)
    assert published == {
        "MessageSent": consenting,
        "MessageSuppressed": MEMBERS - consenting,
    }
    assert (waiting, blocked) == (0, 0)
    assert stats["sent"] == consenting and stats["failed"] == 0
    assert stats["suppressed"] == {"no_consent": MEMBERS - consenting}
