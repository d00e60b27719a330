"""Integration fixtures: a real PostgreSQL (embedded unless TEST_DATABASE_URL is set) and
the ledger running as a real HTTP server process on a free port."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ledger.entrypoints.cli import migrate
from ledger.service_layer.programs import create_program
from loyalty_common.db import connect
from loyalty_common.embedded import sibling_database
from loyalty_common.testing import (
    command_path,
    free_port,
    fresh_database,
    running_process,
    service_key,
)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with fresh_database() as dsn:
        migrate(dsn)
        yield dsn


@pytest.fixture(scope="session")
def ledger_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    loyalty = shutil.which("loyalty", path=str(Path(sys.executable).parent))
    assert loyalty is not None
    env = {
        "DATABASE_URL": database_url,
        "LEDGER_PORT": str(port),
        "LOYALTY_ENV": "dev",
        "LEDGER_CLOCK_INTERVAL_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path_factory.mktemp("ledger") / "ledger.log"
    url = f"http://127.0.0.1:{port}"
    with running_process([loyalty, "serve"], env, f"{url}/healthz", log):
        yield url


@dataclass
class Program:
    program_id: str
    admin_key: str
    checkout_key: str
    url: str

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            timeout=30,
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
        )

    def async_client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            timeout=60,
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
            **kwargs,
        )


def new_program(database_url: str, url: str, name: str = "Test Club") -> Program:
    async def run() -> Program:
        conn = await connect(database_url)
        try:
            created = await create_program(conn, name)
        finally:
            await conn.close()
        return Program(
            str(created.program_id), created.api_keys[0]["key"], created.api_keys[1]["key"], url
        )

    return asyncio.run(run())


@pytest.fixture
def program(database_url: str, ledger_url: str) -> Program:
    return new_program(database_url, ledger_url)


@pytest.fixture
def api(program: Program) -> Iterator[httpx.Client]:
    with program.client() as client:
        yield client


def idem() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def enrol(api: httpx.Client, **fields: Any) -> str:
    body = {"external_id": f"ext-{uuid.uuid4().hex[:10]}", **fields}
    response = api.post("/v1/members", json=body, headers=idem())
    assert response.status_code == 201, response.text
    return str(response.json()["member_id"])


def purchase(amount: str = "100.00", **fields: Any) -> dict[str, Any]:
    return {
        "order_id": f"o-{uuid.uuid4().hex[:10]}",
        "amount": amount,
        "currency": "NOK",
        "occurred_at": "2026-11-01T12:00:00Z",
        "channel": "store",
        **fields,
    }


def earn(api: httpx.Client, member_id: str, amount: str = "100.00", **fields: Any) -> Any:
    response = api.post(
        f"/v1/members/{member_id}/earn", json=purchase(amount, **fields), headers=idem()
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from loyalty_common.kafka import EmbeddedKafka

    broker = EmbeddedKafka(free_port(), tmp_path_factory.mktemp("kafka") / "broker.log")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@dataclass
class RelayProcess:
    url: str
    topic: str
    bootstrap: str


@pytest.fixture(scope="session")
def relay(
    database_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    port = free_port()
    loyalty = shutil.which("loyalty", path=str(Path(sys.executable).parent))
    assert loyalty is not None
    topic = "loyalty.ledger.events.v1"
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "RELAY_PORT": str(port),
        "KAFKA_PARTITIONS": "3",
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path_factory.mktemp("relay") / "relay.log"
    url = f"http://127.0.0.1:{port}"
    with running_process([loyalty, "relay"], env, f"{url}/healthz", log):
        yield RelayProcess(url, topic, kafka_bootstrap)


async def read_topic(
    bootstrap: str, topic: str, *, until_ids: set[str], timeout: float = 60.0
) -> list[tuple[str, int, str]]:
    """(stream_id, stream_version, event_id) of every message, in partition order, read
    until every id in ``until_ids`` has been seen."""
    from aiokafka import AIOKafkaConsumer
    from ledger.adapters.protobuf import decode

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
    )
    await consumer.start()
    seen: list[tuple[str, int, str]] = []
    missing = set(until_ids)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while missing and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for message in messages:
                    envelope = decode(message.value)
                    seen.append((envelope.stream_id, envelope.stream_version, envelope.event_id))
                    missing.discard(envelope.event_id)
    finally:
        await consumer.stop()
    return seen


@dataclass
class FollowProcess:
    url: str


@pytest.fixture(scope="session")
def follow(
    database_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FollowProcess]:
    """`loyalty follow`: the ledger's copy of tiers and bonus campaigns."""
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LEDGER_FOLLOW_PORT": str(port),
        "KAFKA_PARTITIONS": "3",
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path_factory.mktemp("follow") / "follow.log"
    url = f"http://127.0.0.1:{port}"
    with running_process([command_path("loyalty"), "follow"], env, f"{url}/healthz", log):
        yield FollowProcess(url)


@dataclass
class RulesProcess:
    url: str
    database_url: str
    log: Path


def start_rules(
    database_url: str,
    ledger_url: str,
    kafka_bootstrap: str,
    rules_database_url: str,
    log: Path,
    *,
    group: str = "rules",
) -> Any:
    port = free_port()
    env = {
        "RULES_DATABASE_URL": rules_database_url,
        "RULES_PORT": str(port),
        "LEDGER_URL": ledger_url,
        "RULES_LEDGER_KEY": service_key(database_url, f"rules-{uuid.uuid4().hex[:6]}"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_PARTITIONS": "3",
        "RULES_CONSUMER_GROUP": group,
        "RULES_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "RULES_CLOCK_INTERVAL_SECONDS": "0",
        "LOYALTY_ENV": "dev",
        "LOG_LEVEL": "WARNING",
    }
    url = f"http://127.0.0.1:{port}"
    return url, running_process([command_path("rules"), "serve"], env, f"{url}/healthz", log)


@pytest.fixture(scope="session")
def rules(
    database_url: str,
    ledger_url: str,
    relay: RelayProcess,
    follow: FollowProcess,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RulesProcess]:
    """The rules service on its own database, fed by the relay, followed by the ledger."""
    log = tmp_path_factory.mktemp("rules") / "rules.log"
    rules_database_url = sibling_database(database_url, f"rules_{uuid.uuid4().hex[:8]}")
    url, process = start_rules(database_url, ledger_url, kafka_bootstrap, rules_database_url, log)
    with process:
        yield RulesProcess(url, rules_database_url, log)


@dataclass
class NotifierProcess:
    url: str
    database_url: str
    smtp: Any
    sms: Any


@pytest.fixture(scope="session")
def notifier(
    database_url: str,
    ledger_url: str,
    rules: RulesProcess,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NotifierProcess]:
    """The notifier on its own database, sending to an SMTP sink and an SMS sink."""
    from loyalty_common.sinks import SmsSink, SmtpSink

    work = tmp_path_factory.mktemp("notifier")
    notifier_database_url = sibling_database(database_url, f"notifier_{uuid.uuid4().hex[:8]}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with SmtpSink(work / "mail") as smtp, SmsSink(work / "sms") as sms:
        env = {
            "NOTIFIER_DATABASE_URL": notifier_database_url,
            "NOTIFIER_PORT": str(port),
            "NOTIFIER_PUBLIC_URL": url,
            "LEDGER_URL": ledger_url,
            "NOTIFIER_LEDGER_KEY": service_key(
                database_url, f"notifier-{uuid.uuid4().hex[:6]}", ("members:write",)
            ),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_PARTITIONS": "3",
            "NOTIFIER_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp.port),
            "SMS_WEBHOOK_URL": sms.url,
            "LOG_LEVEL": "WARNING",
        }
        with running_process(
            [command_path("notifier"), "serve"], env, f"{url}/healthz", work / "notifier.log"
        ):
            yield NotifierProcess(url, notifier_database_url, smtp, sms)


ROOT = Path(__file__).resolve().parents[2]


def protoc_decode(
    value: bytes,
    message: str = "loyalty.ledger.v1.Envelope",
    schema: str = "proto/loyalty/ledger/v1/events.proto",
) -> str:
    """Decode a message with protoc from proto/ alone (not the generated classes)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--decode={message}",
            str(ROOT / schema),
        ],
        input=value,
        capture_output=True,
        check=True,
        timeout=30,
    )
    return result.stdout.decode()
