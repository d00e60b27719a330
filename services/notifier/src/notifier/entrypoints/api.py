"""The notifier: its REST API (delivery log, statistics, settings, unsubscribe links),
and in the same process the consumer of the ledger, tier and campaign topics, the
delivery worker and the outbox relay of its own topic."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import time
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

import asyncpg
import httpx
import structlog
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from loyalty_common.consumer import EventConsumer
from loyalty_common.db import create_pool
from loyalty_common.health import liveness, readiness
from loyalty_common.ledger_keys import ApiKey, KeyChecker, require
from loyalty_common.logs import configure_logging
from loyalty_common.outbox import OutboxRelay
from loyalty_common.problems import JSONResponse, ProblemError, install_problem_handlers
from loyalty_common.telemetry import TELEMETRY, instrument, metrics_response, setup_tracing
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from notifier.config import NotifierSettings
from notifier.domain.templates import (
    SAMPLE_VARIABLES,
    TemplateError,
    default_templates,
    validate_override,
)
from notifier.service_layer.deciding import (
    DEFAULT_SETTINGS,
    Context,
    Topics,
    handler,
)
from notifier.service_layer.delivery import DeliveryWorker, Providers

log = structlog.get_logger("notifier")


def create_app(settings: NotifierSettings, database_url: str) -> FastAPI:
    configure_logging(settings.log_level)
    setup_tracing("notifier")
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        raise SystemExit("the notifier needs KAFKA_BOOTSTRAP_SERVERS")
    topics = Topics(
        ledger=settings.ledger_topic,
        tiers=settings.tiers_topic,
        campaigns=settings.campaigns_topic,
        notifications=settings.notifications_topic,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(database_url, min_size=4, max_size=settings.pool_size)
        ledger = httpx.AsyncClient(base_url=settings.ledger_url, timeout=10)
        app.state.pool, app.state.ledger, app.state.settings = pool, ledger, settings
        app.state.keys = KeyChecker(ledger)
        consumer = EventConsumer(
            pool=pool,
            handler=handler(Context(topics, settings.public_url.rstrip("/"))),
            topics=[topics.ledger, topics.tiers, topics.campaigns],
            group=settings.consumer_group,
            bootstrap=bootstrap,
            idempotence=settings.kafka_idempotence,
            dlq_replication_factor=settings.kafka_replication_factor,
            consumer_options={"session_timeout_ms": settings.kafka_session_timeout_ms},
        )
        relay = OutboxRelay(
            pool,
            bootstrap=bootstrap,
            name="notifier",
            topics=[topics.notifications],
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            idempotence=settings.kafka_idempotence,
        )
        worker = DeliveryWorker(
            pool,
            Providers(
                smtp_host=settings.smtp_host,
                smtp_port=settings.smtp_port,
                smtp_tls=settings.smtp_tls,
                smtp_username=settings.smtp_username,
                smtp_password=(
                    settings.smtp_password.get_secret_value() if settings.smtp_password else None
                ),
                mail_from=settings.mail_from,
                sms_webhook_url=settings.sms_webhook_url,
                public_url=settings.public_url.rstrip("/"),
            ),
            notifications_topic=topics.notifications,
            max_attempts=settings.max_attempts,
        )
        app.state.consumer, app.state.relay, app.state.bootstrap = consumer, relay, bootstrap
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(consumer.run()),
            asyncio.create_task(relay.run(stop)),
            asyncio.create_task(worker.run(stop)),
        ]
        try:
            yield
        finally:
            stop.set()
            await consumer.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ledger.aclose()
            await pool.close()

    app = FastAPI(
        title="Loyalty notifier",
        version="1",
        summary="Tier, campaign and expiry messages by email and SMS",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        telemetry=TELEMETRY,
    )
    instrument(app)
    install_problem_handlers(app)
    _routes(app)
    return app


_bearer = HTTPBearer(auto_error=False, description="A ledger API key: `Bearer lk_...`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
ProgramHeader = Annotated[str | None, Header(alias="X-Loyalty-Program", max_length=100)]


@dataclass(frozen=True)
class Caller:
    key: ApiKey
    pool: asyncpg.Pool

    @property
    def program_id(self) -> UUID:
        return self.key.program_id


def caller(scope: str) -> Callable[..., Awaitable[Caller]]:
    async def dependency(
        request: Request, credentials: Credentials, program: ProgramHeader = None
    ) -> Caller:
        key = await require(
            request.app.state.keys,
            credentials.credentials if credentials else None,
            program,
            scope,
        )
        return Caller(key, request.app.state.pool)

    return dependency


Admin = Annotated[Caller, Depends(caller("admin"))]
Reader = Annotated[Caller, Depends(caller("points:read"))]


class QuietHours(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    end: str = Field(pattern=r"^\d{2}:\d{2}$")

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        time.fromisoformat(value)
        return value


Channel = Literal["email", "sms"]
EventType = Literal[
    "TierChanged",
    "TierProgress",
    "TierDowngradeWarning",
    "OfferIssued",
    "PointsExpiring",
    "RewardGranted",
]
Locale = Literal["nb", "sv", "da", "en"]
assert set(get_args(EventType)) == set(SAMPLE_VARIABLES)


def _email_only() -> list[Channel]:
    return ["email"]


def _every_event() -> list[EventType]:
    return list(get_args(EventType))


class WebhookSettings(BaseModel):
    """The program's own endpoint, sent the events it names, signed with its secret."""

    model_config = ConfigDict(extra="forbid")
    url: AnyHttpUrl
    events: list[EventType] = Field(default_factory=_every_event, min_length=1)
    secret: str | None = Field(
        default=None,
        description="Standard Webhooks signing secret, `whsec_` and base64 of 24 to 64 "
        "random bytes. Write-only; needed when the webhook is first set, kept otherwise.",
    )

    @field_validator("secret")
    @classmethod
    def _signing_secret(cls, value: str | None) -> str | None:
        if value is None:
            return None
        prefix, _, encoded = value.partition("_")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            key = b""
        if prefix != "whsec" or not 24 <= len(key) <= 64:
            raise ValueError("expected whsec_ and base64 of 24 to 64 random bytes")
        return value


class SettingsDocument(BaseModel):
    """A program's notification settings."""

    model_config = ConfigDict(extra="forbid")
    transactional_channels: list[Channel] = Field(default_factory=_email_only)
    marketing_per_week: int | None = Field(default=3, ge=0, le=100)
    quiet_hours: QuietHours | None = None
    webhook: WebhookSettings | None = None


class TemplateParts(BaseModel):
    """Template sources replacing the default's parts: an email has subject, html and
    text, an SMS text. Parts left out keep the default."""

    model_config = ConfigDict(extra="forbid")
    subject: str | None = Field(default=None, max_length=1000)
    html: str | None = Field(default=None, max_length=100_000)
    text: str | None = Field(default=None, max_length=20_000)


def _message_view(row: asyncpg.Record) -> dict[str, Any]:
    status = row["status"]
    if status == "pending" and row["reason"] == "quiet_hours":
        status = "deferred"
    return {
        "message_id": str(row["message_id"]),
        "event_id": str(row["event_id"]),
        "event_type": row["event_type"],
        "channel": row["channel"],
        "kind": row["kind"],
        "member_id": str(row["member_id"]),
        "campaign_id": str(row["campaign_id"]) if row["campaign_id"] else None,
        "status": status,
        "reason": row["reason"],
        "recipient": row["recipient"],
        "locale": row["locale"],
        "subject": row["subject"],
        "segments": row["segments"],
        "attempts": row["attempts"],
        "created_at": row["created_at"].isoformat(),
        "next_attempt_at": row["next_attempt_at"].isoformat() if status != "sent" else None,
        "sent_at": row["sent_at"].isoformat() if row["sent_at"] else None,
    }


_UNSUBSCRIBED = """<!doctype html><html><head><meta charset="utf-8">
<title>Unsubscribed</title></head><body><p>{text}</p></body></html>"""


def _routes(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        return await liveness(request.app.state.consumer, request.app.state.relay)

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        return await readiness(request.app.state.pool, request.app.state.bootstrap)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError):
            await request.app.state.relay.lag()  # refreshes the outbox gauges
        return metrics_response()

    @app.get("/v1/messages", tags=["messages"])
    async def messages(
        caller: Reader,
        member_id: Annotated[UUID | None, Query()] = None,
        campaign_id: Annotated[UUID | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> JSONResponse:
        """The delivery log, newest first: every message decided, with the reason for
        every one not sent."""
        rows = await caller.pool.fetch(
            """SELECT * FROM messages
                WHERE program_id = $1 AND ($2::uuid IS NULL OR member_id = $2)
                  AND ($3::uuid IS NULL OR campaign_id = $3)
                ORDER BY created_at DESC, message_id LIMIT $4""",
            caller.program_id,
            member_id,
            campaign_id,
            limit,
        )
        return JSONResponse({"messages": [_message_view(r) for r in rows]})

    @app.get("/v1/messages/stats", tags=["messages"])
    async def stats(
        caller: Reader, campaign_id: Annotated[UUID | None, Query()] = None
    ) -> JSONResponse:
        """Counts by outcome (sent, deferred, pending, suppressed by reason, failed)."""
        rows = await caller.pool.fetch(
            """SELECT status, reason, count(*) AS n FROM messages
                WHERE program_id = $1 AND ($2::uuid IS NULL OR campaign_id = $2)
                GROUP BY status, reason""",
            caller.program_id,
            campaign_id,
        )
        counts: dict[str, Any] = {"sent": 0, "deferred": 0, "pending": 0, "failed": 0}
        suppressed: dict[str, int] = {}
        for row in rows:
            if row["status"] == "suppressed":
                suppressed[row["reason"]] = suppressed.get(row["reason"], 0) + row["n"]
            elif row["status"] == "pending" and row["reason"] == "quiet_hours":
                counts["deferred"] += row["n"]
            else:
                counts[row["status"]] += row["n"]
        return JSONResponse(
            {
                "campaign_id": str(campaign_id) if campaign_id else None,
                **counts,
                "suppressed": suppressed,
            }
        )

    @app.get("/v1/settings", tags=["settings"])
    async def get_settings(caller: Admin) -> JSONResponse:
        """The program's settings (the webhook's secret is never shown)."""
        stored = await caller.pool.fetchval(
            "SELECT settings FROM programs WHERE program_id = $1", caller.program_id
        )
        if stored is None:
            raise ProblemError(
                404, "program_not_found", "the notifier has not seen this program yet"
            )
        return JSONResponse({**DEFAULT_SETTINGS, **dict(stored)})

    @app.put("/v1/settings", tags=["settings"])
    async def put_settings(document: SettingsDocument, caller: Admin) -> JSONResponse:
        """Replace the program's settings. A webhook keeps its secret unless a new one
        is given; a webhook without one must give it."""
        settings = document.model_dump(mode="json", exclude={"webhook": {"secret"}})
        secret = document.webhook.secret if document.webhook else None
        async with caller.pool.acquire() as conn, conn.transaction():
            stored = await conn.fetchrow(
                "SELECT webhook_secret FROM programs WHERE program_id = $1 FOR UPDATE",
                caller.program_id,
            )
            if stored is None:
                raise ProblemError(
                    404, "program_not_found", "the notifier has not seen this program yet"
                )
            if document.webhook and not (secret or stored["webhook_secret"]):
                raise ProblemError(
                    422,
                    "webhook_secret_required",
                    "webhook.secret: a new webhook needs its signing secret",
                    field="webhook.secret",
                )
            await conn.execute(
                """UPDATE programs SET settings = $2,
                          webhook_secret = CASE WHEN $3 THEN coalesce($4, webhook_secret) END
                    WHERE program_id = $1""",
                caller.program_id,
                settings,
                document.webhook is not None,
                secret,
            )
        return JSONResponse(settings)

    @app.get("/v1/templates", tags=["templates"])
    async def list_templates(caller: Admin) -> JSONResponse:
        """The program's template overrides (which parts of which templates)."""
        rows = await caller.pool.fetch(
            """SELECT event_type, channel, locale, parts, updated_at FROM template_overrides
                WHERE program_id = $1 ORDER BY event_type, channel, locale""",
            caller.program_id,
        )
        return JSONResponse(
            {
                "templates": [
                    {
                        "event_type": r["event_type"],
                        "channel": r["channel"],
                        "locale": r["locale"],
                        "overridden": sorted(dict(r["parts"])),
                        "updated_at": r["updated_at"].isoformat(),
                    }
                    for r in rows
                ]
            }
        )

    async def _template_view(
        pool: asyncpg.Pool, program_id: UUID, event_type: str, channel: str, locale: str
    ) -> dict[str, Any]:
        parts = await pool.fetchval(
            """SELECT parts FROM template_overrides WHERE program_id = $1
                  AND event_type = $2 AND channel = $3 AND locale = $4""",
            program_id,
            event_type,
            channel,
            locale,
        )
        overridden = dict(parts or {})
        return {
            "event_type": event_type,
            "channel": channel,
            "locale": locale,
            "parts": {**default_templates(event_type, channel, locale), **overridden},
            "overridden": sorted(overridden),
            "variables": sorted(SAMPLE_VARIABLES[event_type]),
        }

    @app.get("/v1/templates/{event_type}/{channel}/{locale}", tags=["templates"])
    async def get_template(
        event_type: EventType, channel: Channel, locale: Locale, caller: Admin
    ) -> JSONResponse:
        """The template in use: each part's source (the program's where it overrode
        it, else the default), and the variables it may use."""
        return JSONResponse(
            await _template_view(caller.pool, caller.program_id, event_type, channel, locale)
        )

    @app.put("/v1/templates/{event_type}/{channel}/{locale}", tags=["templates"])
    async def put_template(
        event_type: EventType,
        channel: Channel,
        locale: Locale,
        document: TemplateParts,
        caller: Admin,
    ) -> JSONResponse:
        """Override parts of a template. Each part is checked before it is saved: it
        must compile, use only the event's variables and known filters, render in every
        locale for every sample event, and (marketing) show the unsubscribe link; else
        422 `invalid_template` naming the part and line. Replaces earlier overrides of
        this template."""
        parts = document.model_dump(exclude_none=True)
        if not parts:
            raise ProblemError(422, "validation_error", "give at least one part", field="parts")
        for part, source in parts.items():
            try:
                validate_override(event_type, channel, part, source)
            except TemplateError as error:
                raise ProblemError(
                    422,
                    "invalid_template",
                    str(error),
                    field=error.field,
                    line=error.line,
                ) from None
        updated = await caller.pool.fetchval(
            """INSERT INTO template_overrides (program_id, event_type, channel, locale, parts)
               SELECT $1, $2, $3, $4, $5 FROM programs WHERE program_id = $1
               ON CONFLICT (program_id, event_type, channel, locale)
               DO UPDATE SET parts = $5, updated_at = now() RETURNING true""",
            caller.program_id,
            event_type,
            channel,
            locale,
            parts,
        )
        if not updated:
            raise ProblemError(
                404, "program_not_found", "the notifier has not seen this program yet"
            )
        return JSONResponse(
            await _template_view(caller.pool, caller.program_id, event_type, channel, locale)
        )

    @app.delete(
        "/v1/templates/{event_type}/{channel}/{locale}", tags=["templates"], status_code=204
    )
    async def delete_template(
        event_type: EventType, channel: Channel, locale: Locale, caller: Admin
    ) -> Response:
        """Back to the default template."""
        await caller.pool.execute(
            """DELETE FROM template_overrides WHERE program_id = $1
                  AND event_type = $2 AND channel = $3 AND locale = $4""",
            caller.program_id,
            event_type,
            channel,
            locale,
        )
        return Response(status_code=204)

    @app.get("/u/{token}", include_in_schema=False)
    async def unsubscribe(token: str, request: Request) -> HTMLResponse:
        """An unsubscribe link: the member withdraws consent for that message's channel,
        recorded at the ledger (ConsentsChanged)."""
        pool: asyncpg.Pool = request.app.state.pool
        row = await pool.fetchrow(
            "SELECT member_id, program_id, channel FROM messages WHERE unsubscribe_token = $1",
            token,
        )
        if row is None:
            return HTMLResponse(_UNSUBSCRIBED.format(text="Unknown link."), status_code=404)
        settings: NotifierSettings = request.app.state.settings
        if not settings.ledger_key:
            raise ProblemError(503, "ledger_unavailable", "the notifier has no ledger key")
        ledger: httpx.AsyncClient = request.app.state.ledger
        response = await ledger.post(
            f"/v1/members/{row['member_id']}/consents",
            json={"consents": {row["channel"]: False}, "source": "unsubscribe link"},
            headers={
                "Authorization": f"Bearer {settings.ledger_key}",
                "X-Loyalty-Program": str(row["program_id"]),
                "Idempotency-Key": f"unsubscribe:{token}",
            },
        )
        if response.status_code >= 300:
            log.warning("unsubscribe_failed", status=response.status_code, body=response.text)
            raise ProblemError(503, "ledger_unavailable", "could not record it; try again")
        # Until the ledger's event comes round, stop marketing on that channel here too.
        await pool.execute(
            "UPDATE members SET consents = consents || $2 WHERE member_id = $1",
            row["member_id"],
            {row["channel"]: False},
        )
        return HTMLResponse(_UNSUBSCRIBED.format(text="You will get no more such messages."))
