"""The outbox relay: publishes the event store to Kafka, in commit-safe order.

The event table is the outbox (ADR 0007): the ledger appends events in the same
statement as its projections, and the relay reads them by (transaction id, position)
the way every relay here does (``loyalty_common.relay``, ADR 0008).
"""

from __future__ import annotations

import asyncpg
from loyalty_common.relay import CommitOrderRelay, Outgoing
from loyalty_common.telemetry import TRACEPARENT

from ledger.adapters.protobuf import envelope_bytes


class Relay(CommitOrderRelay):
    """Publishes the ``events`` table to the ledger topic, keyed by stream (member)."""

    table = "events"
    sequence = "position"
    columns = """event_id, program_id, stream_id, version, type, data, occurred_at,
                 recorded_at, actor, reason, correlation_id, causation_id, position,
                 trace_context"""
    cursor_table = "relay_cursors"

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
    ) -> None:
        super().__init__(
            pool,
            bootstrap=bootstrap,
            name=name,
            topics=[topic],
            partitions=partitions,
            replication_factor=replication_factor,
            idempotence=idempotence,
            batch_size=batch_size,
        )
        self.topic = topic

    def message(self, row: asyncpg.Record) -> Outgoing:
        return Outgoing(
            self.topic,
            row["stream_id"].encode(),
            envelope_bytes(row),
            [
                ("event_id", str(row["event_id"]).encode()),
                ("type", row["type"].encode()),
                ("content-type", b"application/x-protobuf"),
                ("correlation_id", row["correlation_id"].encode()),
                *([(TRACEPARENT, row["trace_context"].encode())] if row["trace_context"] else []),
            ],
        )
