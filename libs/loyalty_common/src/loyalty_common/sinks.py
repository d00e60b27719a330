"""Loopback sinks for email and SMS: real servers that keep what they receive.

Used by the development stack and the notifier's tests in place of a real mail relay and
a real SMS provider.

``SmtpSink`` is an SMTP server (aiosmtpd) on ``127.0.0.1:<port>``. Every message it
accepts is written to its directory as ``<n>-<safe message-id>.eml`` (the raw bytes as
received) and as one line of ``index.jsonl``::

    {"received_at": "<ISO 8601 UTC>", "mail_from": "...", "rcpt_tos": ["..."],
     "message_id": "<Message-ID header or null>", "subject": "<decoded or null>",
     "idempotency_key": "<X-Idempotency-Key header or null>", "file": "<n>-<id>.eml"}

``SmsSink`` is an HTTP server on ``127.0.0.1:<port>`` implementing this webhook contract,
which the notifier follows:

``POST /sms``
    Body (JSON): ``{"to": "+4791234567", "text": "...", "segments": 2, "reference": "..."}``;
    ``to`` and ``text`` are required, ``segments`` (a positive integer) and ``reference``
    (a string) are optional. Header ``Idempotency-Key`` is required.

    * ``202 {"id": "<provider id>"}``: accepted and stored.
    * ``200 {"id": "<same provider id>"}``: an SMS with this Idempotency-Key was already
      accepted; nothing new is stored (the provider dedupes).
    * ``400 {"error": "..."}``: body is not a JSON object, ``to`` is missing or not E.164
      (``^\\+[1-9]\\d{6,14}$``), ``text`` is missing or empty, ``segments``/``reference``
      have the wrong type, or the Idempotency-Key header is missing or empty.
    * Injected failures (see ``/_control``): ``500 {"error": "injected failure"}`` or
      ``422 {"error": "rejected by provider"}`` (any other injected status answers
      ``{"error": "injected failure"}``); nothing is stored.

    Order of checks: validation (400) first, then an injected failure if one is pending
    (each such request consumes one), then dedupe by Idempotency-Key, then store.

``POST /_control``
    ``{"fail_with": 500, "times": 3}`` makes the next 3 valid ``POST /sms`` answer 500;
    ``{"fail_with": 422, "times": 1}`` likewise with 422. ``times`` defaults to 1;
    ``times: 0`` clears pending failures. Answers ``200 {"fail_with": s, "times": n}``.

``GET /_messages``
    ``200`` with the JSON list of stored SMS records::

        {"id", "to", "text", "segments", "reference", "idempotency_key", "received_at"}

``GET /_health``
    ``200 {"status": "ok"}``.

Accepted SMS are appended to ``<dir>/sms.jsonl`` (one record a line) and kept in memory.
Both sinks reload what their directory already holds on start, so a restarted dev stack
keeps its history and the SMS sink keeps deduping.

Command line::

    python -m loyalty_common.sinks --smtp-port P --sms-port Q --dir D

runs both until SIGTERM or SIGINT and prints
``sinks ready smtp=127.0.0.1:P sms=http://127.0.0.1:Q/sms dir=D`` when ready.
"""

from __future__ import annotations

import argparse
import email.policy
import json
import re
import signal
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from loyalty_common.ports import free_port

__all__ = ["E164", "SmsSink", "SmtpSink", "main"]

HOST = "127.0.0.1"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()


def _safe_name(message_id: str | None) -> str:
    if not message_id:
        return "no-message-id"
    safe = _UNSAFE.sub("_", message_id.strip().strip("<>")).strip("._")
    return safe[:120] or "no-message-id"


# --------------------------------------------------------------------------- SMTP


class _SmtpHandler:
    """aiosmtpd handler: stores each message in the sink's directory."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        if raw is None:
            content = envelope.content
            raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else b""
        try:
            self._sink._store(envelope.mail_from or "", list(envelope.rcpt_tos), raw)
        except Exception as error:  # keep the server up; tell the client
            return f"451 Requested action aborted: {error}"
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server on loopback that writes every message it receives to ``directory``."""

    def __init__(self, directory: str | Path, port: int | None = None) -> None:
        self.directory = Path(directory)
        self._port = port if port is not None else free_port()
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self._count = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def index_path(self) -> Path:
        return self.directory / "index.jsonl"

    def start(self) -> None:
        if self._controller is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._count = len(_read_jsonl(self.index_path))
        controller = Controller(
            _SmtpHandler(self),
            hostname=HOST,
            port=self._port,
            enable_SMTPUTF8=True,
            ready_timeout=5.0,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return _read_jsonl(self.index_path)

    def _store(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> dict[str, Any]:
        headers = BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
        message_id = headers.get("Message-ID")
        subject = headers.get("Subject")
        key = headers.get("X-Idempotency-Key")
        with self._lock:
            self._count += 1
            name = f"{self._count}-{_safe_name(str(message_id) if message_id else None)}.eml"
            (self.directory / name).write_bytes(raw)
            record: dict[str, Any] = {
                "received_at": _now(),
                "mail_from": mail_from,
                "rcpt_tos": rcpt_tos,
                "message_id": str(message_id).strip() if message_id is not None else None,
                "subject": str(subject) if subject is not None else None,
                "idempotency_key": str(key).strip() if key is not None else None,
                "file": name,
            }
            _append_jsonl(self.index_path, record)
        return record

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- SMS


class _SmsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sink: SmsSink, port: int) -> None:
        self.sink = sink
        super().__init__((HOST, port), _SmsRequestHandler)


class _SmsRequestHandler(BaseHTTPRequestHandler):
    server: _SmsHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        return json.loads(raw.decode("utf-8"))

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/_messages":
            self._reply(200, self.server.sink.messages())
        elif path == "/_health":
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._json_body()
        except (ValueError, UnicodeDecodeError):
            body = None
        if path == "/sms":
            status, answer = self.server.sink._submit(body, self.headers.get("Idempotency-Key"))
            self._reply(status, answer)
        elif path == "/_control":
            if not isinstance(body, dict):
                self._reply(400, {"error": "body must be a JSON object"})
                return
            fail_with, times = body.get("fail_with"), body.get("times", 1)
            valid_status = isinstance(fail_with, int) and 400 <= fail_with <= 599
            if not valid_status or not isinstance(times, int) or times < 0:
                self._reply(400, {"error": "need fail_with (400-599) and times (>= 0)"})
                return
            assert isinstance(fail_with, int)
            self.server.sink.fail(fail_with, times)
            self._reply(200, {"fail_with": fail_with, "times": times})
        else:
            self._reply(404, {"error": "not found"})


class SmsSink:
    """An HTTP SMS-provider stand-in on loopback (contract in the module docstring)."""

    def __init__(self, directory: str | Path, port: int | None = None) -> None:
        self.directory = Path(directory)
        self._port = port if port is not None else free_port()
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._by_key: dict[str, str] = {}
        self._fail_status = 0
        self._fail_times = 0
        self._server: _SmsHttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._port}/sms"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "sms.jsonl"

    def start(self) -> None:
        if self._server is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._messages = _read_jsonl(self.log_path)
            self._by_key = {m["idempotency_key"]: m["id"] for m in self._messages}
        server = _SmsHttpServer(self, self._port)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        thread.name = f"sms-sink-{self._port}"
        thread.start()
        self._server, self._thread = server, thread

    def stop(self) -> None:
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self._messages]

    def fail(self, status: int, times: int = 1) -> None:
        """Make the next ``times`` valid ``POST /sms`` answer ``status``; nothing is stored."""
        with self._lock:
            self._fail_status = status
            self._fail_times = max(0, times)

    def _submit(self, body: Any, key: str | None) -> tuple[int, dict[str, Any]]:
        error = _validate(body, key)
        if error is not None:
            return 400, {"error": error}
        assert isinstance(body, dict) and key is not None
        key = key.strip()
        with self._lock:
            if self._fail_times > 0:
                self._fail_times -= 1
                status = self._fail_status
                reason = "rejected by provider" if status == 422 else "injected failure"
                return status, {"error": reason}
            existing = self._by_key.get(key)
            if existing is not None:
                return 200, {"id": existing}
            record: dict[str, Any] = {
                "id": f"sms-{uuid.uuid4().hex}",
                "to": body["to"],
                "text": body["text"],
                "segments": body.get("segments"),
                "reference": body.get("reference"),
                "idempotency_key": key,
                "received_at": _now(),
            }
            _append_jsonl(self.log_path, record)
            self._messages.append(record)
            self._by_key[key] = record["id"]
        return 202, {"id": record["id"]}

    def __enter__(self) -> SmsSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _validate(body: Any, key: str | None) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    to = body.get("to")
    if not isinstance(to, str) or not E164.match(to):
        return "to must be an E.164 number like +4791234567"
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return "text must be a non-empty string"
    segments = body.get("segments")
    if segments is not None and (
        not isinstance(segments, int) or isinstance(segments, bool) or segments < 1
    ):
        return "segments must be a positive integer"
    reference = body.get("reference")
    if reference is not None and not isinstance(reference, str):
        return "reference must be a string"
    if key is None or not key.strip():
        return "Idempotency-Key header is required"
    return None


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loyalty_common.sinks",
        description="Run the loopback SMTP and SMS sinks until SIGTERM or SIGINT.",
    )
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--sms-port", type=int, required=True)
    parser.add_argument("--dir", required=True, help="directory to store what is received")
    args = parser.parse_args(argv)

    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    directory = Path(args.dir)
    smtp = SmtpSink(directory, args.smtp_port)
    sms = SmsSink(directory, args.sms_port)
    try:
        smtp.start()
        sms.start()
        print(f"sinks ready smtp={HOST}:{smtp.port} sms={sms.url} dir={args.dir}", flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        sms.stop()
        smtp.stop()


if __name__ == "__main__":
    main()
