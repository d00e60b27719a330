"""Migrations on an empty database, and read models rebuilt from the events alone."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
from ledger.adapters.projections import snapshot
from ledger.entrypoints.cli import migrate
from loyalty_common.testing import fresh_database

from tests.integration.conftest import Program, earn, enrol, idem


def test_migrations_apply_to_an_empty_database() -> None:
    with fresh_database() as dsn:
        migrate(dsn)
        migrate(dsn)  # a second run is a no-op

        async def tables() -> set[str]:
            conn = await asyncpg.connect(dsn)
            try:
                rows = await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                return {r["tablename"] for r in rows}
            finally:
                await conn.close()

        assert {"events", "members", "lots", "transactions", "cards", "idempotency_keys",
                "programs", "api_keys", "alembic_version"} <= asyncio.run(tables())


async def _snapshot(dsn: str) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        return await snapshot(conn)
    finally:
        await conn.close()


def test_rebuild_gives_identical_read_models(program: Program, database_url: str) -> None:
    with program.client() as api:
        for _ in range(3):
            member = enrol(api)
            token = f"tok_{member[:8]}"
            api.post(f"/v1/members/{member}/cards", json={"card_token": token}, headers=idem())
            first = earn(api, member, "700")
            earn(api, member, "300")
            redeemed = api.post(f"/v1/members/{member}/redeem", json={"points": 850},
                                headers=idem()).json()
            api.post(f"/v1/transactions/{redeemed['transaction_id']}/reverse",
                     json={"points": 100}, headers=idem())
            api.post(f"/v1/transactions/{first['transaction_id']}/reverse",
                     json={"amount": "350"}, headers=idem())
        api.post("/v1/ops/clock", params={"as_of": "2029-02-01T00:00:00Z"}, headers=idem())
    before = asyncio.run(_snapshot(database_url))
    assert before["members"] and before["lots"] and before["transactions"] and before["cards"]
    loyalty = shutil.which("loyalty", path=str(Path(sys.executable).parent))
    assert loyalty is not None
    result = subprocess.run([loyalty, "projections", "rebuild"], capture_output=True, text=True,
                            env={**os.environ, "DATABASE_URL": database_url}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "rebuilt projections" in result.stderr
    after = asyncio.run(_snapshot(database_url))
    for table in before:
        assert after[table] == before[table], table
