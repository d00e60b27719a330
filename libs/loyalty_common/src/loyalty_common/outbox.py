"""A transactional outbox for services that publish events (rules, notifier).

A service appends events to ``outbox`` in the transaction that decides them; the
``OutboxRelay`` publishes them to Kafka in commit-safe order, as the ledger's relay
publishes its event store (``loyalty_common.relay``).

    await outbox.append(conn, topic="loyalty.tiers.events.v1", key=member_id,
                        event_id=event_id, payload=message.SerializeToString(),
                        headers={"event_type": "TierChanged"})
    relay = OutboxRelay(pool, bootstrap=..., name="rules", topics=[...], ...)
    await relay.run(stop)

Services add ``OUTBOX_DDL`` to their migrations.
"""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from loyalty_common.relay import CommitOrderRelay, Lag, Outgoing
from loyalty_common.telemetry import TRACEPARENT, current_traceparent

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
    The current trace (``traceparent``) and the correlation id bound for logging travel
    with it as headers.
    """
    carried = dict(headers or {})
    traceparent = current_traceparent()
    if traceparent:
        carried.setdefault(TRACEPARENT, traceparent)
    correlation_id = structlog.contextvars.get_contextvars().get("correlation_id")
    if correlation_id:
        carried.setdefault("correlation_id", str(correlation_id))
    added = await conn.fetchval(
        """INSERT INTO outbox (event_id, topic, key, payload, headers)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING
           RETURNING true""",
        event_id,
        topic,
        key,
        payload,
        carried,  # the pool's jsonb codec encodes it
    )
    return bool(added)


class OutboxRelay(CommitOrderRelay):
    """Publishes the outbox to the topics each row names; metrics labelled by ``name``."""

    table = "outbox"
    sequence = "seq"
    columns = "event_id, topic, key, payload, headers"
    cursor_table = "outbox_cursors"

    def message(self, row: asyncpg.Record) -> Outgoing:
        headers = [("event_id", str(row["event_id"]).encode())]
        headers += [(k, str(v).encode()) for k, v in row["headers"].items()]
        headers.append(("content-type", b"application/x-protobuf"))
        return Outgoing(row["topic"], row["key"].encode(), row["payload"], headers)

    async def lag(self) -> Lag:
        lag = await super().lag()
        LAG_EVENTS.labels(self.name).set(lag.events)
        LAG_SECONDS.labels(self.name).set(lag.seconds)
        return lag

    async def publish_batch(self) -> int:
        published = await super().publish_batch()
        PUBLISHED.labels(self.name).inc(published)
        return published
