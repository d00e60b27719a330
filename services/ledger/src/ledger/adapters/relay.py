"""The outbox relay: publishes the event store to Kafka, in commit-safe order.

The event table is the outbox: the ledger appends events in the same statement as its
projections, and the relay reads them by (transaction id, position), only from
transactions older than every one still running, so a late commit is never passed
over. A batch is sent whole, its acknowledgements are awaited once, and only then does
the cursor move: a crash in between sends the batch again, with the same event ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from loyalty_common.kafka import ensure_topic

from ledger.adapters.protobuf import envelope_bytes

log = structlog.get_logger("relay")

BATCH_SQL = """
SELECT position, event_id, program_id, stream_id, version, type, data, occurred_at,
       recorded_at, actor, reason, correlation_id, causation_id, xact_id::text AS xact
  FROM events
 WHERE (xact_id, position) > ($1::text::xid8, $2)
   AND xact_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY xact_id, position
 LIMIT $3
"""

LAG_SQL = """
SELECT count(*) AS events,
       coalesce(extract(epoch FROM now() - min(recorded_at)), 0)::float8 AS seconds
  FROM events WHERE (xact_id, position) > ($1::text::xid8, $2)
"""


@dataclass
class Lag:
    events: int
    seconds: float


class Relay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        bootstrap: str,
        topic: str,
        partitions: int,
        replication_factor: int,
        batch_size: int,
        idempotence: bool,
        name: str = "ledger-events",
        idle_seconds: float = 0.05,
    ) -> None:
        self.pool, self.bootstrap, self.topic = pool, bootstrap, topic
        self.partitions, self.replication_factor = partitions, replication_factor
        self.batch_size, self.idempotence, self.name = batch_size, idempotence, name
        self.idle_seconds = idle_seconds
        self.published = 0
        self.broker_up: bool | None = None  # None: not tried yet
        self._cursor: tuple[str, int] | None = None
        self._producer: AIOKafkaProducer | None = None

    async def lag(self) -> Lag:
        xact, position = await self._load_cursor()
        row = await self.pool.fetchrow(LAG_SQL, xact, position)
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
                    await self._fail(exc)
                    wait, backoff = backoff, min(backoff * 2, 5.0)
                except Exception as exc:  # the database, most likely: never die, retry
                    log.warning("relay_batch_failed", error=repr(exc))
                    await self._close_producer()
                    wait, backoff = backoff, min(backoff * 2, 5.0)
                if wait:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
        finally:
            await self._close_producer()

    async def publish_batch(self) -> int:
        """Publish the next batch; returns how many events it held."""
        xact, position = await self._load_cursor()
        rows = await self.pool.fetch(BATCH_SQL, xact, position, self.batch_size)
        if not rows:
            if self._producer is None:
                await self._producer_started()
            return 0
        producer = await self._producer_started()
        pending = []
        for row in rows:
            pending.append(
                await producer.send(
                    self.topic,
                    key=row["stream_id"].encode(),
                    value=envelope_bytes(row),
                    headers=[
                        ("event_id", str(row["event_id"]).encode()),
                        ("type", row["type"].encode()),
                        ("content-type", b"application/x-protobuf"),
                    ],
                )
            )
        await asyncio.gather(*pending)
        last = rows[-1]
        await self.pool.execute(
            "UPDATE relay_cursors SET xact_id = $2::text::xid8, position = $3,"
            " published_at = now() WHERE name = $1",
            self.name,
            last["xact"],
            last["position"],
        )
        self._cursor = (last["xact"], last["position"])
        self.published += len(rows)
        return len(rows)

    async def _load_cursor(self) -> tuple[str, int]:
        if self._cursor is None:
            # A relay of a new name publishes the store from its beginning.
            await self.pool.execute(
                "INSERT INTO relay_cursors (name, xact_id, position) VALUES ($1, '0', 0)"
                " ON CONFLICT (name) DO NOTHING",
                self.name,
            )
            row = await self.pool.fetchrow(
                "SELECT xact_id::text AS xact, position FROM relay_cursors WHERE name = $1",
                self.name,
            )
            if row is None:
                raise RuntimeError(f"no relay cursor named {self.name}; run the migrations")
            self._cursor = (row["xact"], row["position"])
        return self._cursor

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._producer is None:
            # (Re)connecting: the topic may be new to this broker, e.g. a restarted one.
            await ensure_topic(
                self.bootstrap,
                self.topic,
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
                log.info("broker_connected", bootstrap=self.bootstrap)
            self.broker_up = True
        return self._producer

    async def _fail(self, exc: BaseException) -> None:
        if self.broker_up is not False:  # log the change, not every retry
            log.warning("broker_unavailable", error=repr(exc))
        self.broker_up = False
        await self._close_producer()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)
