"""Rebuilding the read models from the event store alone, beside the live ones.

The rebuild folds every member stream, as of one snapshot, into copies of the
projection tables (``<table>__next``), builds their indexes, refolds the streams that
changed meanwhile, checks the copies, and then swaps them in: a short transaction
locks the live tables, folds what changed last, drops the old tables and renames the
new ones. Writers wait only for that swap; statements waiting on the old tables find
the new ones by name once it commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from ledger.adapters.codec import coupon_columns, decode_event, member_row
from ledger.domain.account import MemberAccount
from ledger.domain.program import ProgramConfig

PROJECTION_TABLES = ("members", "lots", "transactions", "cards", "coupons")
REBUILD_LOCK = 0x72656275696C64  # an advisory lock id: one rebuild at a time
NEXT = "__next"

# Each table read back in a stable order, for comparing one build with another.
SNAPSHOT_SQL = {
    "members": "SELECT * FROM members ORDER BY member_id",
    "lots": "SELECT * FROM lots ORDER BY lot_id",
    "transactions": "SELECT * FROM transactions ORDER BY transaction_id",
    "cards": "SELECT * FROM cards ORDER BY program_id, card_token",
    "coupons": "SELECT * FROM coupons ORDER BY coupon_id",
}


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(r.values()) for r in await conn.fetch(sql)]
        for table, sql in SNAPSHOT_SQL.items()
    }


@dataclass
class RebuildReport:
    events: int = 0
    members: int = 0
    caught_up: int = 0
    differences: dict[str, int] = field(default_factory=dict)


class _Rows:
    """Rows of folded accounts, copied into the ``__next`` tables in batches."""

    def __init__(
        self, writer: asyncpg.Connection, configs: dict[UUID, ProgramConfig], *, overlap: bool
    ) -> None:
        self.writer, self.configs, self.overlap = writer, configs, overlap
        self.rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in PROJECTION_TABLES}
        self._copying: asyncio.Task[None] | None = None

    def add(self, program_id: UUID, account: MemberAccount) -> None:
        # asyncpg takes ids as text; building UUID objects here would only cost time.
        member = account.member_id
        self.rows["members"].append(
            member_row(account, program_id, account.next_period_end(self.configs[program_id]))
        )
        self.rows["lots"].extend(
            (
                lot.lot_id,
                member,
                lot.earned_at,
                lot.expires_at,
                lot.available_at,
                lot.original,
                lot.remaining,
                lot.pending,
            )
            for lot in account.lots.values()
        )
        self.rows["transactions"].extend(
            (
                tx.transaction_id,
                program_id,
                member,
                tx.kind,
                tx.points,
                tx.occurred_at,
                tx.qualifying_points,
                tx.qualifying_month,
                tx.lot_id,
                [{"lot_id": a.lot_id, "points": a.points} for a in tx.allocations],
                tx.amount,
                tx.currency,
                tx.order_id,
                tx.reversed_points,
                tx.reversed_qualifying,
                tx.reversed_amount,
                tx.returned,
            )
            for tx in account.transactions.values()
        )
        self.rows["cards"].extend((program_id, token, member) for token in account.cards)
        self.rows["coupons"].extend(
            coupon_columns(coupon, program_id, member) for coupon in account.coupons.values()
        )

    async def flush(self) -> None:
        """Copy the rows gathered so far. With ``overlap`` (a writer connection of its
        own), the copy runs while the next rows are folded: PostgreSQL and Python then
        work at once instead of taking turns."""
        await self.drain()
        batch, self.rows = self.rows, {t: [] for t in PROJECTION_TABLES}
        self._copying = asyncio.create_task(self._copy(batch))
        if not self.overlap:
            await self.drain()

    async def drain(self) -> None:
        if self._copying is not None:
            copying, self._copying = self._copying, None
            await copying

    async def _copy(self, batch: dict[str, list[tuple[Any, ...]]]) -> None:
        for table, rows in batch.items():
            if rows:
                await self.writer.copy_records_to_table(table + NEXT, records=rows)


async def _fold(
    conn: asyncpg.Connection,
    configs: dict[UUID, ProgramConfig],
    where: str,
    args: list[Any],
    progress: Callable[[int], None],
    batch: int = 2000,
    writer: asyncpg.Connection | None = None,
) -> tuple[int, int]:
    """Fold the member streams chosen by ``where`` into the ``__next`` tables, copying
    through ``writer`` (concurrently with the folding) when given."""
    rows = _Rows(writer or conn, configs, overlap=writer is not None)
    current: MemberAccount | None = None
    program: UUID | None = None
    events = members = 0
    cursor = await conn.cursor(
        "SELECT program_id, stream_id, type, data FROM events"
        f" WHERE stream_id NOT LIKE 'program-%' AND ({where}) ORDER BY stream_id, version",
        *args,
    )
    while block := await cursor.fetch(batch * 5):
        for record in block:
            event = decode_event(record["type"], record["data"])
            if current is None or record["stream_id"] != current.member_id:
                if current is not None and program is not None:
                    rows.add(program, current)
                    members += 1
                current = MemberAccount.from_events([event])
                program = record["program_id"]
            else:
                current.apply(event)
        events += len(block)
        progress(len(block))
        if len(rows.rows["members"]) >= batch:
            await rows.flush()
    if current is not None and program is not None:
        rows.add(program, current)
        members += 1
    await rows.flush()
    await rows.drain()
    return events, members


async def _index_statements(conn: asyncpg.Connection) -> list[str]:
    """What builds the live tables' indexes and constraints on the copies, named with the
    ``__next`` suffix that the swap removes."""
    build: list[str] = []
    for table in PROJECTION_TABLES:
        for row in await conn.fetch(
            """SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition,
                          c.conname, c.contype::text AS contype
                     FROM pg_index x
                     JOIN pg_class i ON i.oid = x.indexrelid
                     LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid
                    WHERE x.indrelid = $1::regclass""",
            table,
        ):
            name = row["name"]
            definition = row["definition"].replace(
                f"INDEX {name} ON public.{table} ", f"INDEX {name}{NEXT} ON public.{table}{NEXT} "
            )
            build.append(definition)
            if row["contype"] in ("p", "u"):
                kind = "PRIMARY KEY" if row["contype"] == "p" else "UNIQUE"
                build.append(
                    f"ALTER TABLE {table}{NEXT} ADD CONSTRAINT {name}{NEXT}"
                    f" {kind} USING INDEX {name}{NEXT}"
                )
    return build


async def _drop_suffixes(conn: asyncpg.Connection, table: str) -> None:
    """Give the swapped-in table's constraints and indexes the live names (the API maps
    constraint names to error codes)."""
    for row in await conn.fetch(
        "SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass"
        " AND strpos(conname, $2) > 0",
        table,
        NEXT,
    ):
        await conn.execute(
            f'ALTER TABLE {table} RENAME CONSTRAINT "{row["conname"]}"'
            f' TO "{row["conname"].replace(NEXT, "")}"'
        )
    for row in await conn.fetch(
        "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE x.indrelid = $1::regclass AND strpos(i.relname, $2) > 0",
        table,
        NEXT,
    ):
        await conn.execute(
            f'ALTER INDEX "{row["relname"]}" RENAME TO "{row["relname"].replace(NEXT, "")}"'
        )


async def _changed_streams(conn: asyncpg.Connection, since: str) -> list[str]:
    rows = await conn.fetch(
        """SELECT DISTINCT stream_id FROM events
            WHERE xact_id >= pg_snapshot_xmin($1::text::pg_snapshot)
              AND NOT pg_visible_in_snapshot(xact_id, $1::text::pg_snapshot)
              AND stream_id NOT LIKE 'program-%'""",
        since,
    )
    return [r["stream_id"] for r in rows]


async def _refold(
    conn: asyncpg.Connection, configs: dict[UUID, ProgramConfig], streams: list[str]
) -> None:
    members = [UUID(s) for s in streams]
    for table in PROJECTION_TABLES:
        await conn.execute(f"DELETE FROM {table}{NEXT} WHERE member_id = ANY($1)", members)
    await _fold(conn, configs, "stream_id = ANY($1)", [streams], lambda _: None)


async def _differences(conn: asyncpg.Connection) -> dict[str, int]:
    counts = {}
    for table in PROJECTION_TABLES:
        counts[table] = await conn.fetchval(
            f"SELECT count(*) FROM ((TABLE {table} EXCEPT TABLE {table}{NEXT})"
            f" UNION ALL (TABLE {table}{NEXT} EXCEPT TABLE {table})) d"
        )
    return counts


async def _check(conn: asyncpg.Connection) -> None:
    broken = await conn.fetchval(
        f"""SELECT count(*) FROM members{NEXT} m
              LEFT JOIN (SELECT member_id,
                                sum(remaining) FILTER (WHERE NOT pending) AS available,
                                sum(remaining) FILTER (WHERE pending) AS pending
                           FROM lots{NEXT} GROUP BY member_id) l USING (member_id)
             WHERE m.available <> coalesce(l.available, 0)
                OR m.pending <> coalesce(l.pending, 0)"""
    )
    if broken:
        raise RuntimeError(f"{broken} rebuilt members disagree with their lots; nothing swapped")


async def rebuild(
    conn: asyncpg.Connection,
    writer: asyncpg.Connection,
    configs: dict[UUID, ProgramConfig],
    progress: Callable[[int], None] = lambda _: None,
) -> RebuildReport:
    """Rebuild every projection from the events and swap it in; see the module doc.

    ``writer``, a second connection, copies the bulk of the rows while ``conn`` reads.
    """
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK):
        raise RuntimeError("another rebuild is running; nothing was changed")
    try:
        return await _rebuild(conn, writer, configs, progress)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", REBUILD_LOCK)


async def _rebuild(
    conn: asyncpg.Connection,
    writer: asyncpg.Connection,
    configs: dict[UUID, ProgramConfig],
    progress: Callable[[int], None],
) -> RebuildReport:
    report = RebuildReport()
    for table in PROJECTION_TABLES:
        await conn.execute(f"DROP TABLE IF EXISTS {table}{NEXT}")
        await conn.execute(f"CREATE TABLE {table}{NEXT} (LIKE {table} INCLUDING DEFAULTS)")
    async with conn.transaction(isolation="repeatable_read"):
        since: str = await conn.fetchval("SELECT pg_current_snapshot()::text")
        report.events, report.members = await _fold(
            conn, configs, "true", [], progress, writer=writer
        )
    for statement in await _index_statements(conn):
        await conn.execute(statement)
    for _ in range(3):  # catch up with writes made while building, outside any lock
        async with conn.transaction(isolation="repeatable_read"):
            now: str = await conn.fetchval("SELECT pg_current_snapshot()::text")
            changed = await _changed_streams(conn, since)
            await _refold(conn, configs, changed)
        report.caught_up += len(changed)
        since = now
        if not changed:
            break
    await _check(conn)
    report.differences = await _differences(conn)
    async with conn.transaction():
        await conn.execute(f"LOCK TABLE {', '.join(PROJECTION_TABLES)} IN ACCESS EXCLUSIVE MODE")
        changed = await _changed_streams(conn, since)
        await _refold(conn, configs, changed)
        report.caught_up += len(changed)
        await conn.execute(f"DROP TABLE {', '.join(PROJECTION_TABLES)}")
        for table in PROJECTION_TABLES:
            await conn.execute(f"ALTER TABLE {table}{NEXT} RENAME TO {table}")
            await _drop_suffixes(conn, table)
    return report
