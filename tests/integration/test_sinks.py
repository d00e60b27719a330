"""The loopback SMTP and SMS sinks: real sockets, real files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from loyalty_common.ports import free_port
from loyalty_common.sinks import SmsSink, SmtpSink

SUBJECT = "Gratulerer, du er nå Gold!"


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "mail", free_port()) as sink:
        yield sink


@pytest.fixture
def sms_sink(tmp_path: Path) -> Iterator[SmsSink]:
    with SmsSink(tmp_path / "sms", free_port()) as sink:
        yield sink


def _tier_mail() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Loyalty <noreply@loyalty.test>"
    message["To"] = "kari@example.no"
    message["Subject"] = SUBJECT
    message["Message-ID"] = "<tier-1@loyalty.test>"
    message["X-Idempotency-Key"] = "tier-upgrade:m-1:gold"
    message.set_content("Hei Kari, du er nå Gold.")
    message.add_alternative("<p>Hei Kari, du er nå <b>Gold</b>.</p>", subtype="html")
    return message


def _plain_mail() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "noreply@loyalty.test"
    message["To"] = "ola@example.no"
    message["Subject"] = "Points expiring"
    message["Message-ID"] = "<expiry/2@loyalty.test>"
    message.set_content("Your points expire soon.")
    return message


async def test_smtp_sink_stores_messages_and_index(smtp_sink: SmtpSink) -> None:
    await aiosmtplib.send(_tier_mail(), hostname="127.0.0.1", port=smtp_sink.port)
    await aiosmtplib.send(
        _plain_mail(),
        hostname="127.0.0.1",
        port=smtp_sink.port,
        sender="bounce@loyalty.test",
        recipients=["ola@example.no", "audit@loyalty.test"],
    )

    first, second = smtp_sink.messages()
    assert first["mail_from"] == "noreply@loyalty.test"
    assert first["rcpt_tos"] == ["kari@example.no"]
    assert first["message_id"] == "<tier-1@loyalty.test>"
    assert first["subject"] == SUBJECT
    assert first["idempotency_key"] == "tier-upgrade:m-1:gold"
    assert first["received_at"]
    assert second["mail_from"] == "bounce@loyalty.test"
    assert second["rcpt_tos"] == ["ola@example.no", "audit@loyalty.test"]
    assert second["message_id"] == "<expiry/2@loyalty.test>"
    assert second["subject"] == "Points expiring"
    assert second["idempotency_key"] is None

    files = sorted(p.name for p in smtp_sink.directory.glob("*.eml"))
    assert files == ["1-tier-1@loyalty.test.eml", "2-expiry_2@loyalty.test.eml"]
    raw = (smtp_sink.directory / "1-tier-1@loyalty.test.eml").read_bytes()
    parsed = BytesParser(policy=default_policy).parsebytes(raw)
    assert parsed["Subject"] == SUBJECT
    assert parsed.get_content_type() == "multipart/alternative"
    html = parsed.get_body(preferencelist=("html",))
    text = parsed.get_body(preferencelist=("plain",))
    assert html is not None and "<b>Gold</b>" in html.get_content()
    assert text is not None and "du er nå Gold" in text.get_content()
    index = (smtp_sink.directory / "index.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in index] == [first, second]


def _sms(to: str = "+4791234567", text: str = "Du er nå Gold!") -> dict[str, object]:
    return {"to": to, "text": text, "segments": 1, "reference": "tier:m-1"}


def test_sms_sink_accepts_and_dedupes(sms_sink: SmsSink) -> None:
    with httpx.Client(timeout=5) as client:
        first = client.post(sms_sink.url, json=_sms(), headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 202
        provider_id = first.json()["id"]
        repeat = client.post(sms_sink.url, json=_sms(), headers={"Idempotency-Key": "k-1"})
        assert repeat.status_code == 200
        assert repeat.json() == {"id": provider_id}
        listed = client.get(sms_sink.url.replace("/sms", "/_messages")).json()

    [stored] = sms_sink.messages()
    assert stored["id"] == provider_id
    assert stored["to"] == "+4791234567"
    assert stored["text"] == "Du er nå Gold!"
    assert stored["segments"] == 1
    assert stored["reference"] == "tier:m-1"
    assert stored["idempotency_key"] == "k-1"
    assert listed == [stored]
    lines = sms_sink.log_path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [stored]


def test_sms_sink_rejects_invalid_requests(sms_sink: SmsSink) -> None:
    with httpx.Client(timeout=5) as client:
        for to in ("004791234567", "+0791234567", "+47 912", ""):
            bad = client.post(sms_sink.url, json=_sms(to=to), headers={"Idempotency-Key": "k"})
            assert bad.status_code == 400, to
            assert "error" in bad.json()
        empty = client.post(sms_sink.url, json=_sms(text=""), headers={"Idempotency-Key": "k"})
        assert empty.status_code == 400
        no_key = client.post(sms_sink.url, json=_sms())
        assert no_key.status_code == 400
        assert "Idempotency-Key" in no_key.json()["error"]
    assert sms_sink.messages() == []


def test_sms_sink_failure_injection(sms_sink: SmsSink) -> None:
    headers = {"Idempotency-Key": "k-fail"}
    with httpx.Client(timeout=5) as client:
        sms_sink.fail(500, 2)
        statuses = [client.post(sms_sink.url, json=_sms(), headers=headers) for _ in range(3)]
        assert [r.status_code for r in statuses] == [500, 500, 202]
        assert len(sms_sink.messages()) == 1

        control = sms_sink.url.replace("/sms", "/_control")
        set_up = client.post(control, json={"fail_with": 422, "times": 1})
        assert set_up.status_code == 200
        other = {"Idempotency-Key": "k-other"}
        rejected = client.post(sms_sink.url, json=_sms(), headers=other)
        assert rejected.status_code == 422
        assert rejected.json() == {"error": "rejected by provider"}
        accepted = client.post(sms_sink.url, json=_sms(), headers=other)
        assert accepted.status_code == 202
    assert [m["idempotency_key"] for m in sms_sink.messages()] == ["k-fail", "k-other"]


def test_sms_sink_keeps_dedupe_across_restart(tmp_path: Path) -> None:
    port = free_port()
    with SmsSink(tmp_path, port) as sink:
        first = httpx.post(sink.url, json=_sms(), headers={"Idempotency-Key": "k"}, timeout=5)
    with SmsSink(tmp_path, port) as sink:
        again = httpx.post(sink.url, json=_sms(), headers={"Idempotency-Key": "k"}, timeout=5)
        assert again.status_code == 200
        assert again.json() == first.json()
        assert len(sink.messages()) == 1


def test_cli_runs_both_sinks_until_sigterm(tmp_path: Path) -> None:
    smtp_port, sms_port = free_port(), free_port()
    directory = tmp_path / "sinks"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loyalty_common.sinks",
            *("--smtp-port", str(smtp_port), "--sms-port", str(sms_port)),
            *("--dir", str(directory)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        stdout = process.stdout
        assert stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=10)
        expected = (
            f"sinks ready smtp=127.0.0.1:{smtp_port} "
            f"sms=http://127.0.0.1:{sms_port}/sms dir={directory}\n"
        )
        assert ready == [expected]

        sms = httpx.post(
            f"http://127.0.0.1:{sms_port}/sms",
            json=_sms(),
            headers={"Idempotency-Key": "cli-1"},
            timeout=5,
        )
        assert sms.status_code == 202
        asyncio.run(aiosmtplib.send(_plain_mail(), hostname="127.0.0.1", port=smtp_port))

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert len((directory / "sms.jsonl").read_text().splitlines()) == 1
    assert len((directory / "index.jsonl").read_text().splitlines()) == 1
    assert len(list(directory.glob("*.eml"))) == 1
