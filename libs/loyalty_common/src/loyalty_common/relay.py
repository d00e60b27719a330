"""Publishing a table's rows to Kafka in commit-safe order: the common part of the
ledger's event relay and the services' outbox relays.

Rows are read by (transaction id, sequence) after a stored cursor, and only from
transactions older than every one still running (``pg_snapshot_xmin``), so a row that
commits late is never passed over (ADR 0008). A batch is sent whole, its
acknowledgements are awaited once, and only then does the cursor move: a crash in
between sends the batch again, with the same event ids, which consumers dedupe.

A subclass names its table, its sequence column and its cursor table, the columns it
reads, and how a row becomes a message (``message``).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from loyalty_common.kafka import ensure_topic

log = structlog.get_logger("relay")


@dataclass
class Lag:
    events: int
    seconds: float


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class CommitOrderRelay(ABC):
    table: ClassVar[str]  # the rows to publish
    sequence: ClassVar[str]  # their order within a transaction
    columns: ClassVar[str]  # what message() reads
    cursor_table: ClassVar[str]  # (name, xact_id, <sequence>, published_at)

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        bootstrap: str,
        name: str,
        topics: Iterable[str],
        partitions: int,
        replication_factor: int,
        idempotence: bool,
        batch_size: int = 500,
        idle_seconds: float = 0.05,
    ) -> None:
        self.pool, self.bootstrap, self.name = pool, bootstrap, name
        self.topics = list(topics)
        self.partitions, self.replication_factor = partitions, replication_factor
        self.idempotence, self.batch_size = idempotence, batch_size
        self.idle_seconds = idle_seconds
        self.published = 0
        self.broker_up: bool | None = None  # None: not tried yet
        self._cursor: tuple[str, int] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._batch_sql = f"""
            SELECT {self.columns}, xact_id::text AS xact, {self.sequence} AS seq
              FROM {self.table}
             WHERE (xact_id, {self.sequence}) > ($1::text::xid8, $2)
               AND xact_id < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY xact_id, {self.sequence}
             LIMIT $3"""
        self._lag_sql = f"""
            SELECT count(*) AS events,
                   coalesce(extract(epoch FROM now() - min(recorded_at)), 0)::float8
                       AS seconds
              FROM {self.table} WHERE (xact_id, {self.sequence}) > ($1::text::xid8, $2)"""

    @abstractmethod
    def message(self, row: asyncpg.Record) -> Outgoing:
        """The Kafka message of one row."""

    async def lag(self) -> Lag:
        """Committed rows not yet acknowledged by the broker, and the oldest one's age."""
        xact, seq = await self._load_cursor()
        row = await self.pool.fetchrow(self._lag_sql, xact, seq)
        return Lag(int(row["events"]), float(row["seconds"]))

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; failures are logged and retried with backoff."""
        backoff = 0.1
        try:
            while not stop.is_set():
                wait = self.idle_seconds
                try:
                    if await self.publish_batch():
                        wait = 0
                    backoff = 0.1
                except (TimeoutError, KafkaError) as exc:
                    if self.broker_up is not False:  # log the change, not every retry
                        log.warning("broker_unavailable", relay=self.name, error=repr(exc))
                    self.broker_up = False
                    await self.close()
                    wait, backoff = backoff, min(backoff * 2, 5.0)
                except Exception as exc:  # the database, most likely: never die, retry
                    log.warning("relay_batch_failed", relay=self.name, error=repr(exc))
                    await self.close()
                    wait, backoff = backoff, min(backoff * 2, 5.0)
                if wait:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
        finally:
            await self.close()

    async def publish_batch(self) -> int:
        """Publish the next batch; returns how many rows it held."""
        xact, seq = await self._load_cursor()
        rows = await self.pool.fetch(self._batch_sql, xact, seq, self.batch_size)
        producer = await self._producer_started()
        if not rows:
            return 0
        pending = []
        for row in rows:
            out = self.message(row)
            pending.append(
                await producer.send(out.topic, key=out.key, value=out.value, headers=out.headers)
            )
        await asyncio.gather(*pending)
        last = rows[-1]
        await self.pool.execute(
            f"UPDATE {self.cursor_table} SET xact_id = $2::text::xid8, {self.sequence} = $3,"
            " published_at = now() WHERE name = $1",
            self.name,
            last["xact"],
            last["seq"],
        )
        self._cursor = (last["xact"], last["seq"])
        self.published += len(rows)
        return len(rows)

    async def close(self) -> None:
        """Stop the producer (``run`` does so itself when it ends)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

    async def _load_cursor(self) -> tuple[str, int]:
        if self._cursor is None:
            # A relay of a new name publishes the table from its beginning.
            await self.pool.execute(
                f"INSERT INTO {self.cursor_table} (name, xact_id, {self.sequence})"
                " VALUES ($1, '0', 0) ON CONFLICT (name) DO NOTHING",
                self.name,
            )
            row = await self.pool.fetchrow(
                f"SELECT xact_id::text AS xact, {self.sequence} AS seq"
                f" FROM {self.cursor_table} WHERE name = $1",
                self.name,
            )
            self._cursor = (row["xact"], row["seq"])
        return self._cursor

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._producer is None:
            # (Re)connecting: the topics may be new to this broker, e.g. a restarted one.
            for topic in self.topics:
                await ensure_topic(
                    self.bootstrap,
                    topic,
                    partitions=self.partitions,
                    replication_factor=self.replication_factor,
                )
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                linger_ms=0,
                enable_idempotence=self.idempotence,
                request_timeout_ms=10_000,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
            if not self.broker_up:
                log.info("broker_connected", relay=self.name, bootstrap=self.bootstrap)
            self.broker_up = True
        return self._producer
