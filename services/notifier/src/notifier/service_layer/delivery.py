"""Sending the messages the notifier decided on: email over SMTP, SMS through the
webhook contract (``loyalty_common.sinks`` documents it), and the program's own
webhook signed as Standard Webhooks prescribe, with retries and a dead end.

Each message is sent in a transaction of its own: the row is locked (`FOR UPDATE SKIP
LOCKED`) while it is sent and marked sent in the same transaction, so replicas and the
worker's own lanes never send the same message twice. What no database can promise is
the moment between the provider accepting a message and the commit: a crash there sends
that message again on restart (one per lane in flight, no more). Each message therefore
carries its id as the provider's idempotency key (the SMS webhook's `Idempotency-Key`,
the email's `Message-ID` and `X-Idempotency-Key`), and a provider that honours it
delivers once (a webhook receiver dedupes by `webhook-id`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import asyncpg
import httpx
import structlog
from loyalty_common.telemetry import continued
from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from standardwebhooks.webhooks import Webhook

from notifier.adapters.publishing import publish

log = structlog.get_logger("notifier.delivery")

MESSAGES = Counter(
    "loyalty_notifier_messages_total",
    "Messages settled, by channel and outcome",
    ["channel", "outcome"],
)
for _channel in ("email", "sms", "webhook"):  # exported from the start, at 0
    for _outcome in ("sent", "retried", "failed"):
        MESSAGES.labels(_channel, _outcome)
_MAX_BACKOFF = timedelta(minutes=30)


class PermanentError(Exception):
    """The provider refused the message for good."""


class TemporaryError(Exception):
    """The provider could not take the message now."""


@dataclass(frozen=True)
class Providers:
    smtp_host: str
    smtp_port: int
    smtp_tls: str  # auto | starttls | tls | none
    smtp_username: str | None
    smtp_password: str | None
    mail_from: str
    sms_webhook_url: str | None
    public_url: str  # where unsubscribe links point


def email_of(row: asyncpg.Record, providers: Providers) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"{row['program_name']} <{providers.mail_from}>"
    message["To"] = row["recipient"]
    message["Subject"] = row["subject"]
    message["Message-ID"] = f"<{row['message_id']}@loyalty-notifier>"
    message["X-Idempotency-Key"] = str(row["message_id"])
    if row["unsubscribe_token"]:
        message["List-Unsubscribe"] = f"<{providers.public_url}/u/{row['unsubscribe_token']}>"
    message.set_content(row["body_text"])
    if row["body_html"]:
        message.add_alternative(row["body_html"], subtype="html")
    return message


class DeliveryWorker:
    """Sends due messages on ``LANES`` concurrent lanes, one message per transaction."""

    LANES = 4

    def __init__(
        self,
        pool: asyncpg.Pool,
        providers: Providers,
        *,
        notifications_topic: str,
        max_attempts: int,
        idle_seconds: float = 0.2,
    ) -> None:
        self.pool, self.providers = pool, providers
        self.topic, self.max_attempts = notifications_topic, max_attempts
        self.idle_seconds = idle_seconds
        self.http = httpx.AsyncClient(timeout=10)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.gather(*(self._lane(stop) for _ in range(self.LANES)))
        finally:
            await self.http.aclose()

    async def _lane(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.send_one()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("delivery_failed", error=repr(exc))
                sent = False
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.idle_seconds)

    async def send_one(self) -> bool:
        """Send the most overdue message no other lane holds; False if none is due."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """SELECT m.*, p.name AS program_name, p.webhook_secret FROM messages m
                     JOIN programs p USING (program_id)
                    WHERE m.status = 'pending' AND m.next_attempt_at <= now()
                    ORDER BY m.next_attempt_at LIMIT 1 FOR UPDATE OF m SKIP LOCKED"""
            )
            if row is None:
                return False
            # Sending continues the trace (and the correlation id) of the event the
            # message was decided from.
            with (
                continued(
                    f"notifier deliver {row['channel']}",
                    row["trace_context"],
                    kind=SpanKind.CLIENT,
                    attributes={"message.id": str(row["message_id"])},
                ),
                structlog.contextvars.bound_contextvars(
                    correlation_id=row["correlation_id"] or None
                ),
            ):
                await self._deliver(conn, row)
            return True

    async def _deliver(self, conn: asyncpg.Connection, row: asyncpg.Record) -> None:
        try:
            provider_id = await self._send(row)
        except PermanentError as exc:
            await self._give_up(conn, row, str(exc))
            return
        except (TemporaryError, OSError, aiosmtplib.SMTPException, httpx.HTTPError) as exc:
            if row["attempts"] + 1 >= self.max_attempts:
                await self._give_up(conn, row, f"gave up after retries: {exc}")
                return
            backoff = min(timedelta(seconds=2 ** min(row["attempts"], 12)), _MAX_BACKOFF)
            await conn.execute(
                """UPDATE messages SET attempts = attempts + 1, reason = $2,
                          next_attempt_at = now() + $3 WHERE message_id = $1""",
                row["message_id"],
                f"retrying: {exc}"[:500],
                backoff,
            )
            MESSAGES.labels(row["channel"], "retried").inc()
            return
        updated = await conn.fetchrow(
            """UPDATE messages SET status = 'sent', attempts = attempts + 1, reason = NULL,
                      provider_id = $2, sent_at = now() WHERE message_id = $1 RETURNING *""",
            row["message_id"],
            provider_id,
        )
        await publish(
            conn,
            self.topic,
            event_type="MessageSent",
            message=updated,
            payload={
                "locale": row["locale"] or "",
                "segments": row["segments"] or 0,
                "provider_id": provider_id,
            },
        )
        MESSAGES.labels(row["channel"], "sent").inc()
        log.info(
            "message_sent",
            message_id=str(row["message_id"]),
            event_type=row["event_type"],
            channel=row["channel"],
            member_id=str(row["member_id"]),
            attempts=updated["attempts"],
        )

    async def _give_up(self, conn: asyncpg.Connection, row: asyncpg.Record, reason: str) -> None:
        updated = await conn.fetchrow(
            """UPDATE messages SET status = 'failed', attempts = attempts + 1, reason = $2
                WHERE message_id = $1 RETURNING *""",
            row["message_id"],
            reason[:500],
        )
        await publish(
            conn,
            self.topic,
            event_type="MessageFailed",
            message=updated,
            payload={"reason": reason[:500], "attempts": updated["attempts"]},
        )
        MESSAGES.labels(row["channel"], "failed").inc()
        log.warning("message_failed", message_id=str(row["message_id"]), reason=reason)

    async def _send(self, row: asyncpg.Record) -> str:
        if row["channel"] == "email":
            return await self._send_email(row)
        if row["channel"] == "sms":
            return await self._send_sms(row)
        return await self._send_webhook(row)

    async def _send_email(self, row: asyncpg.Record) -> str:
        message = email_of(row, self.providers)
        try:
            tls = self.providers.smtp_tls
            await aiosmtplib.send(
                message,
                hostname=self.providers.smtp_host,
                port=self.providers.smtp_port,
                username=self.providers.smtp_username,
                password=self.providers.smtp_password,
                use_tls=tls == "tls",
                start_tls={"auto": None, "starttls": True}.get(tls, False),
                timeout=10,
            )
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentError(f"SMTP {exc.code} {exc.message}") from exc
            raise TemporaryError(f"SMTP {exc.code} {exc.message}") from exc
        return str(message["Message-ID"])

    async def _send_sms(self, row: asyncpg.Record) -> str:
        if not self.providers.sms_webhook_url:
            raise PermanentError("no SMS provider configured (SMS_WEBHOOK_URL)")
        body: dict[str, Any] = {
            "to": row["recipient"],
            "text": row["body_text"],
            "segments": row["segments"],
            "reference": str(row["message_id"]),
        }
        response = await self.http.post(
            self.providers.sms_webhook_url,
            json=body,
            headers={"Idempotency-Key": str(row["message_id"])},
        )
        _check("SMS provider", response)
        return str(response.json().get("id", ""))

    async def _send_webhook(self, row: asyncpg.Record) -> str:
        """POST the event to the program's endpoint, signed with its secret: headers
        `webhook-id` (the message id, the same on every retry), `webhook-timestamp` and
        `webhook-signature` (HMAC-SHA256, Standard Webhooks v1)."""
        if not row["webhook_secret"]:
            raise PermanentError("the program's webhook has no secret")
        message_id, now = str(row["message_id"]), datetime.now(UTC)
        body = row["body_text"]
        response = await self.http.post(
            row["recipient"],
            content=body.encode(),
            headers={
                "Content-Type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(row["webhook_secret"]).sign(message_id, now, body),
            },
        )
        _check("webhook endpoint", response)
        return message_id


def _check(provider: str, response: httpx.Response) -> None:
    """5xx and 429 are worth another try; other 4xx are a refusal for good."""
    if response.status_code >= 500 or response.status_code == 429:
        raise TemporaryError(f"{provider} answered {response.status_code}")
    if response.status_code >= 400:
        raise PermanentError(f"{provider} answered {response.status_code}: {response.text[:300]}")
