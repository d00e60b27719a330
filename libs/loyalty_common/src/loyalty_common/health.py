"""Readiness: can this process reach what it needs right now?

`/healthz` says the process is alive (a restart would not help otherwise); `/readyz`
says whether it can do its work: its database answers and, for processes that read or
write Kafka, a broker answers a metadata request. An unready instance is taken out of
its Service by Kubernetes and comes back by itself when both answer again.
"""

from __future__ import annotations

import asyncio

import asyncpg
from aiokafka.client import AIOKafkaClient

from loyalty_common.consumer import EventConsumer
from loyalty_common.outbox import OutboxRelay
from loyalty_common.problems import JSONResponse

TIMEOUT_SECONDS = 2.0


async def _database(pool: asyncpg.Pool) -> str:
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


async def _broker(bootstrap: str) -> str:
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(TIMEOUT_SECONDS * 1000)
    )
    try:
        await asyncio.wait_for(client.bootstrap(), TIMEOUT_SECONDS)
    except Exception as exc:  # aiokafka raises its own and the socket's errors
        return f"unreachable: {type(exc).__name__}"
    finally:
        await client.close()
    return "ok"


async def readiness(pool: asyncpg.Pool, bootstrap: str | None = None) -> JSONResponse:
    """200 when the database (and the broker, if given) answer; else 503, naming which
    did not."""
    checks = {"database": _database(pool)}
    if bootstrap:
        checks["broker"] = _broker(bootstrap)
    results = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
    ready = all(value == "ok" for value in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "unready", "checks": results},
        status_code=200 if ready else 503,
    )


async def liveness(consumer: EventConsumer, outbox: OutboxRelay) -> JSONResponse:
    """/healthz of a service with a consumer and an outbox: alive, with the consumer's
    lag and, when the database answers, the outbox's (null otherwise: the database
    being away is /readyz's business, not a reason to restart)."""
    try:
        lag: int | None = (await asyncio.wait_for(outbox.lag(), TIMEOUT_SECONDS)).events
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        lag = None
    return JSONResponse(
        {"status": "ok", "consumer_lag": sum(consumer.lag().values()), "outbox_lag": lag}
    )
