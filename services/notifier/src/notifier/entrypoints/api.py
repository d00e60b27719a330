"""The notifier: its REST API (delivery log, statistics, settings, unsubscribe links),
and in the same process the consumer of the ledger, tier and campaign topics, the
delivery worker and the outbox relay of its own topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import time
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
import httpx
import structlog
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from loyalty_common.consumer import EventConsumer
from loyalty_common.db import create_pool
from loyalty_common.ledger_keys import ApiKey, KeyChecker, require
from loyalty_common.logs import configure_logging
from loyalty_common.outbox import OutboxRelay
from loyalty_common.problems import JSONResponse, ProblemError, install_problem_handlers
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from notifier.config import NotifierSettings
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
                mail_from=settings.mail_from,
                sms_webhook_url=settings.sms_webhook_url,
                public_url=settings.public_url.rstrip("/"),
            ),
            notifications_topic=topics.notifications,
            max_attempts=settings.max_attempts,
        )
        app.state.consumer, app.state.relay = consumer, relay
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
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
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


def _email_only() -> list[Channel]:
    return ["email"]


class SettingsDocument(BaseModel):
    """A program's notification settings."""

    model_config = ConfigDict(extra="forbid")
    transactional_channels: list[Channel] = Field(default_factory=_email_only)
    marketing_per_week: int | None = Field(default=3, ge=0, le=100)
    quiet_hours: QuietHours | None = None


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
        await request.app.state.pool.fetchval("SELECT 1")
        consumer: EventConsumer = request.app.state.consumer
        outbox = await request.app.state.relay.lag()
        return JSONResponse(
            {
                "status": "ok",
                "consumer_lag": sum(consumer.lag().values()),
                "outbox_lag": outbox.events,
            }
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        await request.app.state.relay.lag()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

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
        stored = await caller.pool.fetchval(
            "SELECT settings FROM programs WHERE program_id = $1", caller.program_id
        )
        return JSONResponse({**DEFAULT_SETTINGS, **dict(stored or {})})

    @app.put("/v1/settings", tags=["settings"])
    async def put_settings(document: SettingsDocument, caller: Admin) -> JSONResponse:
        settings = document.model_dump()
        updated = await caller.pool.fetchval(
            "UPDATE programs SET settings = $2 WHERE program_id = $1 RETURNING true",
            caller.program_id,
            settings,
        )
        if not updated:
            raise ProblemError(
                404, "program_not_found", "the notifier has not seen this program yet"
            )
        return JSONResponse(settings)

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
