"""The HTTP stack's own ceiling, for ``bench/run.py``: a FastAPI endpoint on an asyncpg
pool that inserts one row per request, with no authentication, idempotency, domain logic
or events.

run.py serves it with uvicorn and as many workers as the ledger, and drives it with the
same load generator and earn requests, so the figure is what FastAPI, uvicorn, asyncpg
and a one-row commit cost together on this machine.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from fastapi import FastAPI, Request
from loyalty_common.db import create_pool
from pydantic import BaseModel


class Purchase(BaseModel):
    order_id: str
    amount: str
    currency: str
    occurred_at: str
    channel: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await create_pool(os.environ["BENCH_THIN_DSN"])
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/members/{member_id}/earn", status_code=201)
async def earn(member_id: UUID, body: Purchase, request: Request) -> dict[str, str]:
    async with request.app.state.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO bench_thin (member_id, order_id, amount) VALUES ($1, $2, $3)",
            member_id,
            body.order_id,
            body.amount,
        )
    return {"member_id": str(member_id), "order_id": body.order_id}
