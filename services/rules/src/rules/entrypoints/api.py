"""The rules service: its REST API, and in the same process the ledger-topic consumer,
the outbox relay, the reward-command worker and the clock."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import asyncpg
import httpx
import structlog
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from loyalty_common.consumer import EventConsumer
from loyalty_common.db import create_pool
from loyalty_common.health import liveness, readiness
from loyalty_common.ledger_keys import ApiKey, KeyChecker, require
from loyalty_common.logs import configure_logging
from loyalty_common.outbox import OutboxRelay
from loyalty_common.problems import JSONResponse, ProblemError, install_problem_handlers
from loyalty_common.telemetry import TELEMETRY, instrument, metrics_response, setup_tracing

from rules.adapters.publishing import Cause, Topics
from rules.config import RulesSettings
from rules.entrypoints.schemas import (
    BonusCampaignRequest,
    ClockRequest,
    OfferCampaignRequest,
    PunchCardRequest,
    TriggersDocument,
)
from rules.service_layer import campaigns, clock, following, tiers
from rules.service_layer.commands import CommandWorker

log = structlog.get_logger("rules")


async def _clock_loop(app: FastAPI, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await clock.run(app.state.pool, app.state.topics, datetime.now(UTC), str(uuid4()))
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("clock run failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def create_app(settings: RulesSettings, database_url: str) -> FastAPI:
    configure_logging(settings.log_level)
    setup_tracing("rules")
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        raise SystemExit("the rules service needs KAFKA_BOOTSTRAP_SERVERS")
    if not settings.ledger_key:
        raise SystemExit(
            "the rules service needs RULES_LEDGER_KEY: a ledger service key"
            " (`loyalty service-key create rules --scope points:write --scope ops`)"
        )
    topics = Topics(tiers=settings.tiers_topic, campaigns=settings.campaigns_topic)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(database_url, min_size=4, max_size=settings.pool_size)
        ledger = httpx.AsyncClient(base_url=settings.ledger_url, timeout=10)
        app.state.pool, app.state.topics = pool, topics
        app.state.keys = KeyChecker(ledger)
        app.state.settings = settings
        consumer = EventConsumer(
            pool=pool,
            handler=following.handler(topics),
            topics=[settings.ledger_topic],
            group=settings.consumer_group,
            bootstrap=bootstrap,
            idempotence=settings.kafka_idempotence,
            dlq_replication_factor=settings.kafka_replication_factor,
            consumer_options={"session_timeout_ms": settings.kafka_session_timeout_ms},
        )
        relay = OutboxRelay(
            pool,
            bootstrap=bootstrap,
            name="rules",
            topics=[topics.tiers, topics.campaigns],
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            idempotence=settings.kafka_idempotence,
        )
        worker = CommandWorker(
            pool,
            ledger_url=settings.ledger_url,
            ledger_key=settings.ledger_key or "",
            topics=topics,
        )
        app.state.consumer, app.state.relay, app.state.bootstrap = consumer, relay, bootstrap
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(consumer.run()),
            asyncio.create_task(relay.run(stop)),
            asyncio.create_task(worker.run(stop)),
        ]
        if settings.clock_interval_seconds > 0:
            tasks.append(
                asyncio.create_task(_clock_loop(app, settings.clock_interval_seconds, stop))
            )
        try:
            yield
        finally:
            stop.set()
            await consumer.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ledger.aclose()
            await pool.close()

    app = FastAPI(
        title="Loyalty rules",
        version="1",
        summary="Tier status, campaigns and reward triggers",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        telemetry=TELEMETRY,
    )
    instrument(app)
    install_problem_handlers(app)
    _routes(app)
    return app


# -- dependencies -----------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="A ledger API key: `Bearer lk_...`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
ProgramHeader = Annotated[str | None, Header(alias="X-Loyalty-Program", max_length=100)]
CorrelationId = Annotated[str | None, Header(alias="X-Correlation-Id", max_length=100)]
IdempotencyKey = Annotated[
    str, Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]


@dataclass(frozen=True)
class Caller:
    key: ApiKey
    pool: asyncpg.Pool
    topics: Topics
    correlation_id: str

    @property
    def program_id(self) -> UUID:
        return self.key.program_id

    def cause(self, request_id: str) -> Cause:
        return Cause(
            id=f"request:{request_id}",
            correlation_id=self.correlation_id,
            occurred_at=datetime.now(UTC),
        )


def caller(scope: str) -> Callable[..., Awaitable[Caller]]:
    async def dependency(
        request: Request,
        credentials: Credentials,
        program: ProgramHeader = None,
        correlation_id: CorrelationId = None,
    ) -> Caller:
        key = await require(
            request.app.state.keys,
            credentials.credentials if credentials else None,
            program,
            scope,
        )
        return Caller(
            key, request.app.state.pool, request.app.state.topics, correlation_id or str(uuid4())
        )

    return dependency


Admin = Annotated[Caller, Depends(caller("admin"))]
Ops = Annotated[Caller, Depends(caller("ops"))]
Reader = Annotated[Caller, Depends(caller("points:read"))]


def _keyed_id(caller: Caller, kind: str, idempotency_key: str) -> UUID:
    """The id a create request's Idempotency-Key stands for, per program and kind."""
    return uuid5(NAMESPACE_URL, f"loyalty-rules:{caller.program_id}:{kind}:{idempotency_key}")


def _fingerprint(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _not_found(what: str) -> ProblemError:
    return ProblemError(404, f"{what}_not_found", f"no such {what.replace('_', ' ')}")


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

    # -- tiers ---------------------------------------------------------------------------

    @app.get("/v1/members/{member_id}/tier", tags=["tiers"])
    async def member_tier(member_id: UUID, caller: Reader) -> JSONResponse:
        """The member's tier, how long it holds, and what the current period points to."""
        async with caller.pool.acquire() as conn:
            view = await tiers.view(conn, caller.program_id, member_id, datetime.now(UTC))
        if view is None:
            raise _not_found("member")
        return JSONResponse(view)

    @app.get("/v1/members/{member_id}/tier/history", tags=["tiers"])
    async def member_tier_history(member_id: UUID, caller: Reader) -> JSONResponse:
        async with caller.pool.acquire() as conn:
            history = await tiers.history(conn, caller.program_id, member_id)
        if history is None:
            raise _not_found("member")
        return JSONResponse({"member_id": str(member_id), "changes": history})

    # -- campaigns -----------------------------------------------------------------------

    async def _create_once(
        caller: Caller,
        kind: str,
        idempotency_key: str,
        body: dict[str, Any],
        create: Callable[[asyncpg.Connection, UUID], Awaitable[dict[str, Any]]],
    ) -> JSONResponse:
        campaign_id = _keyed_id(caller, kind, idempotency_key)
        async with caller.pool.acquire() as conn:
            existing = await conn.fetchrow(
                "SELECT definition FROM campaigns WHERE campaign_id = $1", campaign_id
            )
            if existing is not None:
                if _fingerprint(dict(existing["definition"])) != _fingerprint(body):
                    raise ProblemError(
                        422,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used with a different request",
                    )
                found = await campaigns.get(conn, caller.program_id, campaign_id)
                return JSONResponse(found, status_code=201)
            return JSONResponse(await create(conn, campaign_id), status_code=201)

    @app.post("/v1/campaigns/bonus", status_code=201, tags=["campaigns"])
    async def create_bonus_campaign(
        body: BonusCampaignRequest, caller: Admin, idempotency_key: IdempotencyKey
    ) -> JSONResponse:
        """A bonus multiplier for earns in a time window; the ledger applies it."""
        document = body.model_dump(mode="json")
        return await _create_once(
            caller,
            "bonus",
            idempotency_key,
            document,
            lambda conn, cid: campaigns.create_bonus(
                conn, caller.topics, caller.program_id, cid, document, caller.cause(str(cid))
            ),
        )

    @app.post("/v1/campaigns/offers", status_code=201, tags=["campaigns"])
    async def create_offer_campaign(
        body: OfferCampaignRequest, caller: Admin, idempotency_key: IdempotencyKey
    ) -> JSONResponse:
        """A coupon for every member of a segment (as it stands now), via the ledger."""
        document = body.model_dump(mode="json")
        return await _create_once(
            caller,
            "offer",
            idempotency_key,
            document,
            lambda conn, cid: campaigns.create_offer(
                conn, caller.program_id, cid, document, caller.cause(str(cid))
            ),
        )

    @app.get("/v1/campaigns", tags=["campaigns"])
    async def list_campaigns(caller: Admin) -> JSONResponse:
        async with caller.pool.acquire() as conn:
            found = await campaigns.list_campaigns(conn, caller.program_id)
        return JSONResponse({"campaigns": found})

    @app.get("/v1/campaigns/{campaign_id}", tags=["campaigns"])
    async def get_campaign(campaign_id: UUID, caller: Admin) -> JSONResponse:
        async with caller.pool.acquire() as conn:
            found = await campaigns.get(conn, caller.program_id, campaign_id)
        if found is None:
            raise _not_found("campaign")
        return JSONResponse(found)

    @app.post("/v1/campaigns/{campaign_id}/cancel", tags=["campaigns"])
    async def cancel_campaign(campaign_id: UUID, caller: Admin) -> JSONResponse:
        """Stop a campaign: a bonus no longer applies to earns recorded from now on."""
        async with caller.pool.acquire() as conn:
            found = await campaigns.cancel(
                conn,
                caller.topics,
                caller.program_id,
                campaign_id,
                caller.cause(f"cancel:{campaign_id}"),
            )
        if found is None:
            raise _not_found("campaign")
        return JSONResponse(found)

    @app.get("/v1/campaigns/{campaign_id}/stats", tags=["campaigns"])
    async def campaign_stats(campaign_id: UUID, caller: Admin) -> JSONResponse:
        """Coupons issued and redeemed, the redemption rate, and the orders' revenue."""
        async with caller.pool.acquire() as conn:
            found = await campaigns.stats(conn, caller.program_id, campaign_id)
        if found is None:
            raise _not_found("campaign")
        return JSONResponse(found)

    # -- triggers and punch cards --------------------------------------------------------

    @app.put("/v1/triggers", tags=["triggers"])
    async def put_triggers(body: TriggersDocument, caller: Admin) -> JSONResponse:
        """Welcome, birthday and referral rewards and points-expiring warnings."""
        document = body.model_dump(mode="json", exclude_none=True)
        async with caller.pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO programs (program_id, triggers) VALUES ($1, $2)
                   ON CONFLICT (program_id) DO UPDATE SET triggers = $2, updated_at = now()""",
                caller.program_id,
                document,
            )
        return JSONResponse(document)

    @app.get("/v1/triggers", tags=["triggers"])
    async def get_triggers(caller: Admin) -> JSONResponse:
        async with caller.pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT triggers FROM programs WHERE program_id = $1", caller.program_id
            )
        return JSONResponse(found or {})

    @app.post("/v1/punch-cards", status_code=201, tags=["punch cards"])
    async def create_punch_card(
        body: PunchCardRequest, caller: Admin, idempotency_key: IdempotencyKey
    ) -> JSONResponse:
        """Every `size` units bought of `category` complete a card and earn its reward."""
        card_id = _keyed_id(caller, "punch_card", idempotency_key)
        reward = body.reward.model_dump(mode="json", exclude_none=True)
        async with caller.pool.acquire() as conn:
            row = await conn.fetchrow(
                """INSERT INTO punch_cards (card_id, program_id, name, category, size, reward)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (card_id) DO UPDATE SET card_id = EXCLUDED.card_id
                   RETURNING *, (name, category, size, reward) = ($3, $4, $5, $6) AS same""",
                card_id,
                caller.program_id,
                body.name,
                body.category,
                body.size,
                reward,
            )
        if not row["same"]:
            raise ProblemError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            )
        return JSONResponse(_card_view(row), status_code=201)

    @app.get("/v1/punch-cards", tags=["punch cards"])
    async def list_punch_cards(caller: Admin) -> JSONResponse:
        async with caller.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM punch_cards WHERE program_id = $1 ORDER BY created_at, card_id",
                caller.program_id,
            )
        return JSONResponse({"punch_cards": [_card_view(row) for row in rows]})

    @app.post("/v1/punch-cards/{card_id}/retire", tags=["punch cards"])
    async def retire_punch_card(card_id: UUID, caller: Admin) -> JSONResponse:
        """No more punches on this card; what members completed stays rewarded."""
        async with caller.pool.acquire() as conn:
            row = await conn.fetchrow(
                """UPDATE punch_cards SET retired_at = coalesce(retired_at, now())
                    WHERE card_id = $1 AND program_id = $2 RETURNING *""",
                card_id,
                caller.program_id,
            )
        if row is None:
            raise _not_found("punch_card")
        return JSONResponse(_card_view(row))

    @app.get("/v1/members/{member_id}/punch-cards", tags=["punch cards"])
    async def member_punch_cards(member_id: UUID, caller: Reader) -> JSONResponse:
        async with caller.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT c.card_id, c.name, c.category, c.size, p.punches, p.completed
                     FROM punch_progress p JOIN punch_cards c USING (card_id)
                    WHERE p.member_id = $1 AND c.program_id = $2 ORDER BY c.created_at""",
                member_id,
                caller.program_id,
            )
        return JSONResponse(
            {
                "member_id": str(member_id),
                "punch_cards": [
                    {
                        "card_id": str(r["card_id"]),
                        "name": r["name"],
                        "category": r["category"],
                        "size": r["size"],
                        "punches": r["punches"],
                        "completed": r["completed"],
                        "to_next_reward": r["size"] - r["punches"],
                    }
                    for r in rows
                ],
            }
        )

    # -- operations ----------------------------------------------------------------------

    @app.get("/v1/rewards", tags=["operations"])
    async def list_rewards(
        caller: Ops,
        member_id: Annotated[UUID | None, Query()] = None,
        status: Annotated[str | None, Query(pattern="^(pending|done|failed)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> JSONResponse:
        """Reward commands for the ledger and their outcome (failed ones with the reason)."""
        async with caller.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT command_id, member_id, kind, body, status, attempts, error,
                          created_at, done_at, response
                     FROM ledger_commands
                    WHERE program_id = $1 AND ($2::uuid IS NULL OR member_id = $2)
                      AND ($3::text IS NULL OR status = $3)
                    ORDER BY created_at DESC, command_id LIMIT $4""",
                caller.program_id,
                member_id,
                status,
                limit,
            )
        return JSONResponse(
            {
                "rewards": [
                    {
                        "command_id": r["command_id"],
                        "member_id": str(r["member_id"]),
                        "kind": r["kind"],
                        "body": r["body"],
                        "status": r["status"],
                        "attempts": r["attempts"],
                        "error": r["error"],
                        "ledger_response": r["response"],
                        "created_at": r["created_at"].isoformat(),
                        "done_at": r["done_at"].isoformat() if r["done_at"] else None,
                    }
                    for r in rows
                ]
            }
        )

    @app.post("/v1/clock/run", tags=["operations"])
    async def run_clock(request: Request, body: ClockRequest, caller: Ops) -> JSONResponse:
        """Run the time-driven rules of the key's program as of `as_of` (default now;
        later dates in dev only). Other programs are left to their own keys and to the
        background clock."""
        settings: RulesSettings = request.app.state.settings
        now = datetime.now(UTC)
        as_of = body.as_of or now
        if as_of.tzinfo is None:
            raise ProblemError(422, "validation_error", "as_of needs a time zone", field="as_of")
        if as_of > now and not settings.allow_future_as_of:
            raise ProblemError(
                422, "as_of_in_future", "as_of may lie in the future only in dev", field="as_of"
            )
        return JSONResponse(
            await clock.run(
                caller.pool, caller.topics, as_of, caller.correlation_id, caller.program_id
            )
        )


def _card_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "card_id": str(row["card_id"]),
        "name": row["name"],
        "category": row["category"],
        "size": row["size"],
        "reward": row["reward"],
        "created_at": row["created_at"].isoformat(),
        "retired_at": row["retired_at"].isoformat() if row["retired_at"] else None,
    }
