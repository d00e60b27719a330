"""Migrations on an empty database, and read models rebuilt from the events alone."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
from ledger.adapters.codec import MEMBER_COLUMNS
from ledger.adapters.projections import snapshot
from ledger.entrypoints.cli import migrate
from loyalty_common.testing import fresh_database

from tests.integration.conftest import Program, earn, enrol, idem, purchase


def test_migrations_apply_to_an_empty_database() -> None:
    with fresh_database() as dsn:
        migrate(dsn)
        migrate(dsn)  # a second run is a no-op

        async def tables() -> set[str]:
            conn = await asyncpg.connect(dsn)
            try:
                rows = await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
                return {r["tablename"] for r in rows}
            finally:
                await conn.close()

        assert {
            "events",
            "members",
            "lots",
            "transactions",
            "cards",
            "idempotency_keys",
            "programs",
            "api_keys",
            "alembic_version",
        } <= asyncio.run(tables())


def test_member_rows_follow_the_members_tables_columns(database_url: str) -> None:
    # The rebuild copies member_row's tuples into the table without naming columns.
    async def columns() -> tuple[str, ...]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'members'::regclass"
                " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            )
            return tuple(r["attname"] for r in rows)
        finally:
            await conn.close()

    assert asyncio.run(columns()) == MEMBER_COLUMNS


def test_replicas_starting_together_migrate_one_fresh_database_one_after_the_other() -> None:
    # Every long-running command migrates at start; four at once on a fresh database
    # must all succeed (without the migration lock, some fail on duplicate tables).
    with fresh_database() as dsn:
        code = f"from ledger.entrypoints.cli import migrate; migrate({dsn!r})"
        processes = [
            subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(4)
        ]
        outcomes = [
            (p.wait(120), p.stderr.read().decode()[-500:] if p.stderr else "") for p in processes
        ]
        assert [code for code, _ in outcomes] == [0, 0, 0, 0], outcomes


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
            coupon = api.post(
                f"/v1/members/{member}/coupons",
                json={
                    "kind": "percent",
                    "value": "10",
                    "points_cost": 5,
                    "valid_from": "2026-01-01T00:00:00Z",
                    "valid_until": "2099-01-01T00:00:00Z",
                },
                headers=idem(),
            ).json()
            api.post(
                f"/v1/coupons/{coupon['code']}/redeem",
                json={"order_id": "o-c", "order_amount": "99.90", "currency": "NOK"},
                headers=idem(),
            )
            api.post(
                f"/v1/members/{member}/coupons",
                json={
                    "kind": "amount",
                    "value": "50",
                    "currency": "NOK",
                    "valid_from": "2026-01-01T00:00:00Z",
                    "valid_until": "2099-01-01T00:00:00Z",
                },
                headers=idem(),
            )
            redeemed = api.post(
                f"/v1/members/{member}/redeem", json={"points": 850}, headers=idem()
            ).json()
            api.post(
                f"/v1/transactions/{redeemed['transaction_id']}/reverse",
                json={"points": 100},
                headers=idem(),
            )
            api.post(
                f"/v1/transactions/{first['transaction_id']}/reverse",
                json={"amount": "350"},
                headers=idem(),
            )
        api.post("/v1/ops/clock", params={"as_of": "2029-02-01T00:00:00Z"}, headers=idem())
    before = asyncio.run(_snapshot(database_url))
    indexes_before = asyncio.run(_indexes(database_url))
    assert all(before[table] for table in ("members", "lots", "transactions", "cards"))
    ours = [c for c in before["coupons"] if str(c[1]) == program.program_id]
    assert len(ours) == 6 and sum(1 for c in ours if c[12]) == 3  # column 12: redeemed_at
    result = _rebuild(database_url)
    assert (
        "differed from the old read models: {'members': 0, 'lots': 0, 'transactions': 0,"
        " 'cards': 0, 'coupons': 0}" in result
    )
    after = asyncio.run(_snapshot(database_url))
    for table in before:
        assert after[table] == before[table], table
    assert asyncio.run(_indexes(database_url)) == indexes_before
    with program.client() as api:  # constraint names survive: duplicates still map to 409
        member = enrol(api)
        order = earn(api, member, "10")
        again = api.post(
            f"/v1/members/{member}/earn",
            json=purchase("10", order_id="o-dup"),
            headers=idem(),
        )
        assert again.status_code == 201
        duplicate = api.post(
            f"/v1/members/{member}/earn",
            json=purchase("10", order_id="o-dup"),
            headers=idem(),
        )
        assert duplicate.status_code == 409 and duplicate.json()["code"] == "duplicate_order"
        assert order["points"] == 10


def test_rebuild_while_writers_write_loses_nothing(program: Program, database_url: str) -> None:
    with program.client() as api:
        members = [enrol(api) for _ in range(20)]

    async def writers(stop: asyncio.Event) -> list[int]:
        statuses: list[int] = []
        async with program.async_client() as client:
            while not stop.is_set():
                batch = await asyncio.gather(
                    *(
                        client.post(f"/v1/members/{m}/earn", json=purchase("5"), headers=idem())
                        for m in members
                    )
                )
                statuses.extend(r.status_code for r in batch)
        return statuses

    async def scenario() -> tuple[list[int], str]:
        stop = asyncio.Event()
        task = asyncio.create_task(writers(stop))
        await asyncio.sleep(0.3)
        output = await asyncio.to_thread(_rebuild, database_url)
        await asyncio.sleep(0.3)
        stop.set()
        return await task, output

    statuses, _ = asyncio.run(scenario())
    assert statuses and set(statuses) == {201}
    # A second rebuild, with nobody writing, finds nothing to correct.
    unchanged = "{'members': 0, 'lots': 0, 'transactions': 0, 'cards': 0, 'coupons': 0}"
    assert unchanged in _rebuild(database_url)
    with program.client() as api:
        for member in members:
            balance = api.get(f"/v1/members/{member}/balance").json()
            assert balance["available"] == 5 * statuses.count(201) // len(members)


def _rebuild(database_url: str) -> str:
    loyalty = shutil.which("loyalty", path=str(Path(sys.executable).parent))
    assert loyalty is not None
    result = subprocess.run(
        [loyalty, "projections", "rebuild"],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": database_url},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


async def _indexes(dsn: str) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public'"
            " AND tablename = ANY($1)",
            ["members", "lots", "transactions", "cards"],
        )
        constraints = await conn.fetch(
            "SELECT conrelid::regclass::text AS t, conname FROM pg_constraint"
            " WHERE conrelid::regclass::text = ANY($1)",
            ["members", "lots", "transactions", "cards"],
        )
        return {(r["tablename"], r["indexname"]) for r in rows} | {
            (r["t"], "constraint " + r["conname"]) for r in constraints
        }
    finally:
        await conn.close()
