"""Republishing stored events to Kafka, marked as replays, for consumers to rebuild from.

Replayed envelopes carry ``replay = true``: consumers rebuild state from them but never
act on the outside world (no email, no SMS, no new rewards).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer
from loyalty_common.kafka import ensure_topic

from ledger.adapters.protobuf import envelope_bytes


@dataclass(frozen=True)
class Selection:
    """Which events to republish; every given bound applies."""

    program_id: UUID | None = None
    member_id: UUID | None = None
    from_position: int | None = None
    to_position: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[str, list[object]]:
        clauses = ["xact_id < pg_snapshot_xmin(pg_current_snapshot())"]
        args: list[object] = []
        for column, op, value in (
            ("program_id", "=", self.program_id),
            ("stream_id", "=", str(self.member_id) if self.member_id else None),
            ("position", ">=", self.from_position),
            ("position", "<=", self.to_position),
            ("recorded_at", ">=", self.since),
            ("recorded_at", "<", self.until),
        ):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} {op} ${len(args)}")
        return " AND ".join(clauses), args


async def count(conn: asyncpg.Connection, selection: Selection) -> int:
    where, args = selection.where()
    total: int = await conn.fetchval(f"SELECT count(*) FROM events WHERE {where}", *args)
    return total


async def publish(
    conn: asyncpg.Connection,
    selection: Selection,
    *,
    bootstrap: str,
    topic: str,
    partitions: int,
    replication_factor: int,
    idempotence: bool,
    progress: Callable[[int], None],
    batch: int = 2000,
) -> int:
    """Send the selected events in commit order, marked as replays; returns how many."""
    where, args = selection.where()
    await ensure_topic(
        bootstrap, topic, partitions=partitions, replication_factor=replication_factor
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, enable_idempotence=idempotence
    )
    await producer.start()
    sent = 0
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            pending: list[asyncio.Future[object]] = []
            async for row in conn.cursor(
                f"SELECT * FROM events WHERE {where} ORDER BY xact_id, position",
                *args,
                prefetch=batch,
            ):
                pending.append(
                    await producer.send(
                        topic,
                        key=row["stream_id"].encode(),
                        value=envelope_bytes(row, replay=True),
                        headers=[
                            ("event_id", str(row["event_id"]).encode()),
                            ("type", row["type"].encode()),
                            ("replay", b"true"),
                            ("content-type", b"application/x-protobuf"),
                        ],
                    )
                )
                if len(pending) >= batch:
                    await asyncio.gather(*pending)  # acknowledgements once per batch
                    sent += len(pending)
                    progress(len(pending))
                    pending.clear()
            await asyncio.gather(*pending)
            sent += len(pending)
            progress(len(pending))
    finally:
        await producer.stop()
    return sent
