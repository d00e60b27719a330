"""Programs: creation (with their first API keys) and configuration changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from loyalty_common.telemetry import current_traceparent

from ledger.adapters.codec import encode_event
from ledger.adapters.repository import StaleTransactionError, ensure_stream_order
from ledger.domain.events import ProgramConfigured
from ledger.service_layer.auth import SCOPES, create_key
from ledger.service_layer.errors import ContentionError
from ledger.service_layer.program_document import ProgramDocument, default_document


@dataclass(frozen=True)
class CreatedProgram:
    program_id: UUID
    api_keys: list[dict[str, Any]]


async def create_program(conn: asyncpg.Connection, name: str) -> CreatedProgram:
    program_id = uuid4()
    document = default_document(name)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO programs (program_id, name, config, config_version)"
            " VALUES ($1, $2, $3, 0)",
            program_id,
            name,
            document.model_dump(mode="json"),
        )
        await configure_program(
            conn, program_id, document, actor="cli", correlation_id=str(uuid4())
        )
        admin = await create_key(conn, program_id, "all scopes", SCOPES)
        checkout = await create_key(
            conn, program_id, "checkout", ("points:write", "points:read", "members:write")
        )
    return CreatedProgram(
        program_id,
        [
            {"key": admin, "name": "all scopes", "scopes": list(SCOPES)},
            {
                "key": checkout,
                "name": "checkout",
                "scopes": ["points:write", "points:read", "members:write"],
            },
        ],
    )


async def configure_program(
    conn: asyncpg.Connection,
    program_id: UUID,
    document: ProgramDocument,
    *,
    actor: str,
    correlation_id: str,
    idempotency: tuple[str, bytes] | None = None,
) -> dict[str, Any]:
    """Store a new configuration and record it as a ProgramConfigured event, atomically."""
    config = document.model_dump(mode="json")
    event_type, data = encode_event(ProgramConfigured(config=config))
    for _ in range(5):
        try:
            return await _configure(
                conn,
                program_id,
                config,
                document.name,
                event_type,
                data,
                actor=actor,
                correlation_id=correlation_id,
                idempotency=idempotency,
            )
        except StaleTransactionError:
            continue  # the transaction waited behind a newer one: again, with a fresh id
    raise ContentionError("the program's configuration is being changed by many requests")


async def _configure(
    conn: asyncpg.Connection,
    program_id: UUID,
    config: dict[str, Any],
    name: str,
    event_type: str,
    data: dict[str, Any],
    *,
    actor: str,
    correlation_id: str,
    idempotency: tuple[str, bytes] | None,
) -> dict[str, Any]:
    stream = f"program-{program_id}"
    now = datetime.now(UTC)
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM programs WHERE program_id = $1 FOR UPDATE", program_id)
        await ensure_stream_order(conn, stream)
        version = await conn.fetchval(
            "UPDATE programs SET config = $2, name = $3, config_version = config_version + 1"
            " WHERE program_id = $1 RETURNING config_version",
            program_id,
            config,
            name,
        )
        await conn.execute(
            "INSERT INTO events (event_id, program_id, stream_id, version, type, data,"
            " occurred_at, recorded_at, actor, correlation_id, trace_context)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10)",
            uuid4(),
            program_id,
            stream,
            version,
            event_type,
            data,
            now,
            actor,
            correlation_id,
            current_traceparent(),
        )
        body = {"program_id": str(program_id), "version": version, **config}
        if idempotency is not None:
            await conn.execute(
                "INSERT INTO idempotency_keys (program_id, key, request_hash, status_code,"
                " response) VALUES ($1, $2, $3, 200, $4)",
                program_id,
                idempotency[0],
                idempotency[1],
                body,
            )
    return body


async def read_program(conn: asyncpg.Connection, program_id: UUID) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT config, config_version FROM programs WHERE program_id = $1", program_id
    )
    assert row is not None
    return {"program_id": str(program_id), "version": row["config_version"], **row["config"]}
