"""Rebuilding the read models from the event store alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import asyncpg

from ledger.adapters.codec import (
    decode_event,
    lot_to_row,
    profile_of,
    transaction_to_row,
)
from ledger.domain.account import MemberAccount
from ledger.domain.program import ProgramConfig

PROJECTION_TABLES = ("members", "lots", "transactions", "cards")

# Each table read back in a stable order, for comparing one build with another.
SNAPSHOT_SQL = {
    "members": "SELECT * FROM members ORDER BY member_id",
    "lots": "SELECT * FROM lots ORDER BY lot_id",
    "transactions": "SELECT * FROM transactions ORDER BY transaction_id",
    "cards": "SELECT * FROM cards ORDER BY program_id, card_token",
}


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: [tuple(r.values()) for r in await conn.fetch(sql)]
            for table, sql in SNAPSHOT_SQL.items()}


async def rebuild(conn: asyncpg.Connection, configs: dict[UUID, ProgramConfig],
                  progress: Callable[[int], None] = lambda _: None, batch: int = 2000) -> int:
    """Replace the projections with a fold of every member stream. Returns events read.

    Runs in the caller's transaction; the tables are locked for its duration.
    """
    await conn.execute(f"TRUNCATE {', '.join(PROJECTION_TABLES)}")
    members: list[tuple[Any, ...]] = []
    lots: list[tuple[Any, ...]] = []
    transactions: list[tuple[Any, ...]] = []
    cards: list[tuple[Any, ...]] = []
    count = 0

    async def flush() -> None:
        for table, rows in (("members", members), ("lots", lots),
                            ("transactions", transactions), ("cards", cards)):
            if rows:
                await conn.copy_records_to_table(table, records=rows)
                rows.clear()

    def finish(program_id: UUID, account: MemberAccount) -> None:
        config = configs[program_id]
        members.append((
            UUID(account.member_id), program_id, account.external_id, account.version,
            account.enrolled_at, profile_of(account), account.available, account.pending,
            account.debt, account.lifetime_earned, account.qualifying,
            account.periods_closed_until, account.next_period_end(config),
        ))
        for lot in account.lots.values():
            row = lot_to_row(lot)
            lots.append((UUID(lot.lot_id), UUID(account.member_id), lot.earned_at,
                         lot.expires_at, lot.available_at, row["original"], row["remaining"],
                         row["pending"]))
        for tx in account.transactions.values():
            row = transaction_to_row(tx)
            transactions.append((
                UUID(tx.transaction_id), program_id, UUID(account.member_id), tx.kind, tx.points,
                tx.occurred_at, tx.qualifying_points, tx.qualifying_month,
                UUID(tx.lot_id) if tx.lot_id else None, row["allocations"], tx.amount,
                tx.currency, tx.order_id, tx.reversed_points, tx.reversed_qualifying,
                tx.reversed_amount, row["returned"],
            ))
        for token in account.cards:
            cards.append((program_id, token, UUID(account.member_id)))

    current: MemberAccount | None = None
    current_program: UUID | None = None
    cursor = conn.cursor(
        "SELECT program_id, stream_id, type, data FROM events"
        " WHERE stream_id NOT LIKE 'program-%' ORDER BY stream_id, version",
        prefetch=batch,
    )
    async for record in cursor:
        event = decode_event(record["type"], record["data"])
        if current is None or record["stream_id"] != current.member_id:
            if current is not None and current_program is not None:
                finish(current_program, current)
                if len(members) >= batch:
                    await flush()
            current = MemberAccount.from_events([event])
            current_program = record["program_id"]
        else:
            current.apply(event)
        count += 1
        if count % 10_000 == 0:
            progress(count)
    if current is not None and current_program is not None:
        finish(current_program, current)
    await flush()
    progress(count)
    return count
