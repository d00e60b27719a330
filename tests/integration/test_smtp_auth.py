"""The notifier's SMTP adapter against a real SMTP server (aiosmtpd on loopback) that
requires a login: it logs in with SMTP_USERNAME and SMTP_PASSWORD, and a refused login
is a permanent failure, not something to retry."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from loyalty_common.ports import free_port
from notifier.service_layer.delivery import DeliveryWorker, PermanentError, Providers

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


class _Inbox:
    def __init__(self) -> None:
        self.received: list[tuple[str | None, Envelope]] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.received.append((session.auth_data.login.decode(), envelope))
        return "250 OK"


def _authenticate(
    server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"club", b"s3cret")
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Inbox]]:
    inbox, port = _Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_required=True,
        auth_require_tls=False,  # loopback in a test; production uses SMTP_TLS
    )
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def _worker(port: int, password: str) -> DeliveryWorker:
    providers = Providers(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        smtp_username="club",
        smtp_password=password,
        mail_from="club@example.no",
        sms_webhook_url=None,
        public_url="http://127.0.0.1",
    )
    return DeliveryWorker(None, providers, notifications_topic="t", max_attempts=3)  # type: ignore[arg-type]


ROW = {
    "message_id": uuid.uuid4(),
    "program_name": "Dyrebutikken Klubb",
    "recipient": "kari@example.no",
    "subject": "Du er nå Silver-medlem!",
    "body_text": "Gratulerer.",
    "body_html": "<p>Gratulerer.</p>",
    "unsubscribe_token": None,
}


async def test_the_notifier_logs_in_to_its_mail_server(smtp: tuple[int, _Inbox]) -> None:
    port, inbox = smtp
    message_id = await _worker(port, "s3cret")._send_email(ROW)  # type: ignore[arg-type]
    assert [(login, envelope.rcpt_tos) for login, envelope in inbox.received] == [
        ("club", ["kari@example.no"])
    ]
    assert message_id == f"<{ROW['message_id']}@loyalty-notifier>"


async def test_a_refused_login_fails_the_message_for_good(smtp: tuple[int, _Inbox]) -> None:
    port, inbox = smtp
    with pytest.raises(PermanentError, match="SMTP 535"):
        await _worker(port, "wrong")._send_email(ROW)  # type: ignore[arg-type]
    assert inbox.received == []
