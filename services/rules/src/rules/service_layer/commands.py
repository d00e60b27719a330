"""Rewards for the ledger, written as idempotent REST commands from a queue table.

A trigger enqueues a command in the same transaction as the fact that earned it; the
worker sends it with the command id as the ledger's Idempotency-Key, so redelivery,
replay into an empty database and worker crashes never reward twice. Once the ledger
has it, what the command announces (RewardGranted, OfferIssued) goes to the outbox
in the same transaction that marks the command done.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import structlog
from prometheus_client import Counter

from rules.adapters.publishing import Cause, Topics, derived_id, publish_campaign_event

log = structlog.get_logger("rules.commands")

COMMANDS = Counter(
    "loyalty_rules_ledger_commands_total", "Reward commands settled, by outcome", ["outcome"]
)
for _outcome in ("done", "retried", "failed"):  # exported from the start, at 0
    COMMANDS.labels(_outcome)

_MAX_BACKOFF = timedelta(minutes=10)


async def enqueue(
    conn: asyncpg.Connection,
    *,
    command_id: str,
    program_id: UUID,
    member_id: UUID,
    kind: str,
    body: dict[str, Any],
    cause: Cause,
    announce: dict[str, Any],
) -> bool:
    """Queue a command once; False if that command id was queued before."""
    inserted: bool | None = await conn.fetchval(
        """INSERT INTO ledger_commands (command_id, program_id, member_id, kind, body,
                                        causation_id, correlation_id, announce, replay)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (command_id) DO NOTHING RETURNING true""",
        command_id,
        program_id,
        member_id,
        kind,
        body,
        cause.id,
        cause.correlation_id,
        announce,
        cause.replay,
    )
    return bool(inserted)


class CommandWorker:
    """Sends due commands to the ledger; one batch at a time, rows locked while sent."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ledger_url: str,
        ledger_key: str,
        topics: Topics,
        batch_size: int = 20,
        idle_seconds: float = 0.2,
    ) -> None:
        self.pool, self.topics = pool, topics
        self.batch_size, self.idle_seconds = batch_size, idle_seconds
        self.client = httpx.AsyncClient(
            base_url=ledger_url,
            timeout=10,
            headers={"Authorization": f"Bearer {ledger_key}"},
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.send_due()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("command batch failed", error=str(exc))
                sent = 0
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.idle_seconds)
        await self.client.aclose()

    async def send_due(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT * FROM ledger_commands
                    WHERE status = 'pending' AND next_attempt_at <= now()
                    ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self.batch_size,
            )
            for row in rows:
                await self._send(conn, row)
            return len(rows)

    async def _send(self, conn: asyncpg.Connection, row: asyncpg.Record) -> None:
        member = row["member_id"]
        path = {
            "earn_bonus": f"/v1/members/{member}/earn",
            "issue_coupon": f"/v1/members/{member}/coupons",
        }[row["kind"]]
        headers = {
            "Idempotency-Key": row["command_id"],
            "X-Loyalty-Program": str(row["program_id"]),
            "X-Causation-Id": row["causation_id"] or "",
            "X-Correlation-Id": row["correlation_id"] or "",
        }
        try:
            response = await self.client.post(path, json=row["body"], headers=headers)
        except httpx.HTTPError as exc:
            await self._retry(conn, row, f"ledger unreachable: {exc!r}")
            return
        if response.status_code < 300:
            await self._done(conn, row, response.json())
        elif (
            response.status_code == 409
            and response.json().get("code") == "idempotency_request_in_progress"
        ):
            await self._retry(conn, row, "in flight")
        elif response.status_code >= 500 or response.status_code == 429:
            await self._retry(conn, row, f"ledger answered {response.status_code}")
        else:
            # The ledger refused it for good (unknown member, bad coupon): visible in the
            # command list with the ledger's problem, never retried.
            await conn.execute(
                """UPDATE ledger_commands SET status = 'failed', attempts = attempts + 1,
                          response = $2, error = $3, done_at = now()
                    WHERE command_id = $1""",
                row["command_id"],
                _json_or_text(response),
                f"ledger answered {response.status_code}",
            )
            COMMANDS.labels("failed").inc()
            log.warning(
                "ledger refused a reward",
                command=row["command_id"],
                status=response.status_code,
                body=response.text[:500],
            )

    async def _retry(self, conn: asyncpg.Connection, row: asyncpg.Record, error: str) -> None:
        backoff = min(timedelta(seconds=2 ** min(row["attempts"], 10)), _MAX_BACKOFF)
        await conn.execute(
            """UPDATE ledger_commands SET attempts = attempts + 1, error = $2,
                      next_attempt_at = now() + $3 WHERE command_id = $1""",
            row["command_id"],
            error,
            backoff,
        )
        COMMANDS.labels("retried").inc()

    async def _done(
        self, conn: asyncpg.Connection, row: asyncpg.Record, response: dict[str, Any]
    ) -> None:
        await conn.execute(
            """UPDATE ledger_commands SET status = 'done', attempts = attempts + 1,
                      response = $2, error = NULL, done_at = now() WHERE command_id = $1""",
            row["command_id"],
            response,
        )
        COMMANDS.labels("done").inc()
        announce = dict(row["announce"])
        event_type = announce.pop("event")
        payload: dict[str, Any] = {**announce}
        if row["kind"] == "issue_coupon":
            payload.update(
                coupon_id=response.get("coupon_id"),
                code=response.get("code"),
                kind=response.get("kind"),
                value=response.get("value"),
                currency=response.get("currency"),
                points_cost=response.get("points_cost", 0),
                valid_from=_parse(response.get("valid_from")),
                valid_until=_parse(response.get("valid_until")),
            )
        else:
            payload.setdefault("points", row["body"].get("points", 0))
        cause = Cause(
            id=row["causation_id"] or row["command_id"],
            correlation_id=row["correlation_id"] or "",
            occurred_at=datetime.now(UTC),
            replay=row["replay"],
        )
        await publish_campaign_event(
            conn,
            self.topics,
            event_type=event_type,
            payload=payload,
            program_id=str(row["program_id"]),
            key=str(row["member_id"]),
            member_id=str(row["member_id"]),
            cause=cause,
            event_id=derived_id("announce", row["command_id"]),
        )


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"text": response.text[:2000]}
