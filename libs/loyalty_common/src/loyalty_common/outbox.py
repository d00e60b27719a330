"""A transactional outbox for services that publish events (rules, notifier).

A service appends events to ``outbox`` in the transaction that decides them; the
``OutboxRelay`` publishes them to Kafka in commit-safe order, the same way the ledger's
relay publishes its event store: rows are read by (transaction id, sequence), only from
transactions older than every one still running, so a late commit is never passed over.
A batch is sent whole and acknowledged before the cursor moves; a crash in between sends
it again with the same event ids, which consumers dedupe.

    await outbox.append(conn, topic="loyalty.tiers.events.v1", key=member_id,
                        event_id=event_id, payload=message.SerializeToString(),
                        headers={"event_type": "TierChanged"})
    relay = OutboxRelay(pool, bootstrap=..., name="rules", topics=[...], ...)
    await relay.run(stop)

Services add ``OUTBOX_DDL`` to their migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from loyalty_common.kafka import ensure_topic

log = structlog.get_logger("outbox")

OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    seq         bigserial   NOT NULL,
    xact_id     xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id    uuid        NOT NULL UNIQUE,
    topic       text        NOT NULL,
    key         text        NOT NULL,
    payload     bytea       NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (xact_id, seq)
);
CREATE TABLE IF NOT EXISTS outbox_cursors (
    name         text        PRIMARY KEY,
    xact_id      xid8        NOT NULL,
    seq          bigint      NOT NULL,
    published_at timestamptz
);
"""

BATCH_SQL = """
SELECT seq, xact_id::text AS xact, event_id, topic, key, payload, headers
  FROM outbox
 WHERE (xact_id, seq) > ($1::text::xid8, $2)
   AND xact_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY xact_id, seq
 LIMIT $3
"""

LAG_SQL = """
SELECT count(*) AS events,
       coalesce(extract(epoch FROM now() - min(recorded_at)), 0)::float8 AS seconds
  FROM outbox WHERE (xact_id, seq) > ($1::text::xid8, $2)
"""

PUBLISHED = Counter(
    "loyalty_outbox_published_total", "Events the outbox relay published", ["relay"]
)
LAG_EVENTS = Gauge(
    "loyalty_outbox_lag_events", "Committed outbox events not yet published", ["relay"]
)
LAG_SECONDS = Gauge(
    "loyalty_outbox_lag_seconds", "Age of the oldest outbox event not yet published", ["relay"]
)


async def append(
    conn: asyncpg.Connection,
    *,
    topic: str,
    key: str,
    event_id: UUID,
    payload: bytes,
    headers: Mapping[str, str] | None = None,
) -> bool:
    """Add an event to the outbox in ``conn``'s transaction.

    An event id already in the outbox is not added again (a cause applied twice, for
    example after a lost acknowledgement, publishes once); returns whether it was new.
    """
    added = await conn.fetchval(
        """INSERT INTO outbox (event_id, topic, key, payload, headers)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING
           RETURNING true""",
        event_id,
        topic,
        key,
        payload,
        dict(headers or {}),  # the pool's jsonb codec encodes it
    )
    return bool(added)


@dataclass
class Lag:
    events: int
    seconds: float


class OutboxRelay:
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
        self.idempotence, self.batch_size, self.idle_seconds = (
            idempotence,
            batch_size,
            idle_seconds,
        )
        self.published = 0
        self.broker_up: bool | None = None  # None: not tried yet
        self._cursor: tuple[str, int] | None = None
        self._producer: AIOKafkaProducer | None = None

    async def lag(self) -> Lag:
        xact, seq = await self._load_cursor()
        row = await self.pool.fetchrow(LAG_SQL, xact, seq)
        lag = Lag(int(row["events"]), float(row["seconds"]))
        LAG_EVENTS.labels(self.name).set(lag.events)
        LAG_SECONDS.labels(self.name).set(lag.seconds)
        return lag

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
                    await self._close_producer()
                    wait, backoff = backoff, min(backoff * 2, 5.0)
                except Exception as exc:  # the database, most likely: never die, retry
                    log.warning("outbox_batch_failed", relay=self.name, error=repr(exc))
                    await self._close_producer()
                    wait, backoff = backoff, min(backoff * 2, 5.0)
                if wait:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop the producer (``run`` does so itself when it ends)."""
        await self._close_producer()

    async def publish_batch(self) -> int:
        """Publish the next batch; returns how many events it held."""
        xact, seq = await self._load_cursor()
        rows = await self.pool.fetch(BATCH_SQL, xact, seq, self.batch_size)
        producer = await self._producer_started()
        if not rows:
            return 0
        pending = []
        for row in rows:
            headers = [("event_id", str(row["event_id"]).encode())]
            headers += [(k, str(v).encode()) for k, v in row["headers"].items()]
            headers.append(("content-type", b"application/x-protobuf"))
            pending.append(
                await producer.send(
                    row["topic"], key=row["key"].encode(), value=row["payload"], headers=headers
                )
            )
        await asyncio.gather(*pending)
        last = rows[-1]
        await self.pool.execute(
            "UPDATE outbox_cursors SET xact_id = $2::text::xid8, seq = $3,"
            " published_at = now() WHERE name = $1",
            self.name,
            last["xact"],
            last["seq"],
        )
        self._cursor = (last["xact"], last["seq"])
        self.published += len(rows)
        PUBLISHED.labels(self.name).inc(len(rows))
        return len(rows)

    async def _load_cursor(self) -> tuple[str, int]:
        if self._cursor is None:
            # A relay of a new name publishes the outbox from its beginning.
            await self.pool.execute(
                "INSERT INTO outbox_cursors (name, xact_id, seq) VALUES ($1, '0', 0)"
                " ON CONFLICT (name) DO NOTHING",
                self.name,
            )
            row = await self.pool.fetchrow(
                "SELECT xact_id::text AS xact, seq FROM outbox_cursors WHERE name = $1",
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

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)
