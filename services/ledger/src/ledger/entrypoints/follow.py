"""`loyalty follow`: consumes the rules service's tier and campaign topics into the
ledger's database (member tiers, bonus campaigns), with its lag on /healthz."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from loyalty_common.consumer import EventConsumer
from loyalty_common.db import create_pool
from loyalty_common.health import readiness
from loyalty_common.kafka import ensure_topic
from loyalty_common.logs import configure_logging
from loyalty_common.problems import JSONResponse
from loyalty_common.telemetry import metrics_response, setup_tracing

from ledger.adapters.following import handler
from ledger.config import LedgerSettings


def create_follow_app(settings: LedgerSettings) -> FastAPI:
    configure_logging(settings.log_level)
    setup_tracing("ledger-follow")
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap or not settings.database_url:
        raise SystemExit("loyalty follow needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS")
    topics = [settings.tiers_topic, settings.campaigns_topic]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url or "", min_size=2, max_size=4)
        for topic in topics:  # the rules service may not have published yet
            await ensure_topic(
                bootstrap,
                topic,
                partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
            )
        consumer = EventConsumer(
            pool=pool,
            handler=handler(settings.tiers_topic, settings.campaigns_topic),
            topics=topics,
            group=settings.follow_group,
            bootstrap=bootstrap,
            idempotence=settings.kafka_idempotence,
            dlq_replication_factor=settings.kafka_replication_factor,
            consumer_options={"session_timeout_ms": settings.kafka_session_timeout_ms},
        )
        app.state.consumer, app.state.pool = consumer, pool
        task = asyncio.create_task(consumer.run())
        try:
            yield
        finally:
            await consumer.stop()
            await asyncio.gather(task, return_exceptions=True)
            await pool.close()

    app = FastAPI(
        title="Loyalty ledger follower",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        consumer: EventConsumer = app.state.consumer
        return JSONResponse(
            {"status": "ok", "group": settings.follow_group, "lag": sum(consumer.lag().values())}
        )

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready: the database and the broker answer."""
        return await readiness(app.state.pool, bootstrap)

    @app.get("/metrics")
    async def metrics() -> Response:
        return metrics_response()

    return app
