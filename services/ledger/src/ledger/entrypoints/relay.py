"""`loyalty relay`: the outbox relay process, with its lag on /healthz."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Response
from loyalty_common.db import create_pool
from loyalty_common.health import readiness
from loyalty_common.logs import configure_logging
from loyalty_common.problems import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from ledger.adapters.relay import Relay
from ledger.config import LedgerSettings


def create_relay_app(settings: LedgerSettings) -> FastAPI:
    configure_logging(settings.log_level)
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap or not settings.database_url:
        raise SystemExit("the relay needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url or "", min_size=2, max_size=4)
        relay = Relay(
            pool,
            bootstrap=bootstrap,
            topic=settings.ledger_topic,
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            batch_size=settings.relay_batch_size,
            idempotence=settings.kafka_idempotence,
            name=settings.relay_name,
        )
        app.state.relay = relay
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        try:
            yield
        finally:
            stop.set()  # the batch in hand finishes; the cursor moves only after its acks
            await task
            await pool.close()

    app = FastAPI(
        title="Loyalty ledger relay",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    registry = CollectorRegistry()
    lag_events = Gauge(
        "loyalty_relay_lag_events",
        "Committed events not yet acknowledged by the broker",
        registry=registry,
    )
    lag_seconds = Gauge(
        "loyalty_relay_lag_seconds",
        "Age of the oldest event not yet acknowledged by the broker",
        registry=registry,
    )
    published = Gauge(
        "loyalty_relay_published_events", "Events published since start", registry=registry
    )
    broker_up = Gauge(
        "loyalty_relay_broker_up", "1 while the broker acknowledges", registry=registry
    )

    @app.get("/metrics")
    async def metrics() -> Response:
        relay: Relay = app.state.relay
        lag = await relay.lag()
        lag_events.set(lag.events)
        lag_seconds.set(lag.seconds)
        published.set(relay.published)
        broker_up.set(1 if relay.broker_up else 0)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Alive, with the lag when the database answers (null when it does not: a
        restart would not bring it back, so that is /readyz's business)."""
        relay: Relay = app.state.relay
        try:
            lag = await asyncio.wait_for(relay.lag(), 2)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            lag = None
        return JSONResponse(
            {
                "status": "ok",
                "broker": "up" if relay.broker_up else "down",
                "published": relay.published,
                "lag_events": lag.events if lag else None,
                "lag_seconds": round(lag.seconds, 3) if lag else None,
            }
        )

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready: the database and the broker answer."""
        return await readiness(app.state.relay.pool, bootstrap)

    return app
