"""The consumer's tables: the inbox that dedupes by event id, and the blocked keys.

Services put ``INBOX_DDL`` into their migrations. Both tables are keyed by consumer group,
so several consumers (the rules' tier projector, the notifier) can share a database.

Operators: a key (a member) is blocked when one of its events was dead-lettered; its later
events are parked in the dead-letter topic (header ``dlq.reason: held_back``,
``dlq.held_back_behind: <event id>``) instead of being applied out of order. To release it:

1. Find it: ``python -m loyalty_common.consumer blocked --group G`` (or
   ``SELECT * FROM consumer_blocked_keys``). The dead-lettered message carries the error
   in its ``dlq.error_type`` / ``dlq.error_message`` headers; ``held_back`` counts the
   key's messages parked behind it.
2. Fix the cause (deploy a fixed handler, correct the data with new events).
3. ``python -m loyalty_common.consumer unblock --group G --key K`` (or ``await
   unblock(conn, "G", "K")``): the key's events are applied again from then on.
4. Right away, re-publish the key's dead-lettered and parked messages to their original
   topic with their key, in their dead-letter order, with the ``dlq.*`` headers
   stripped. None of them reached the inbox, so each is applied once; one that was
   applied after all is skipped by its event id.

Unblock before re-publishing: while the key is blocked, its dead-lettered event is taken
for a lost offset commit and skipped, and the rest are parked again. An event of the key
that arrives between steps 3 and 4 is applied before the re-published ones; keep the two
steps together (one script) where that order matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

INBOX_DDL = """
CREATE TABLE IF NOT EXISTS consumer_inbox (
    group_name   text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, event_id)
);
CREATE TABLE IF NOT EXISTS consumer_blocked_keys (
    group_name text        NOT NULL,
    key        text        NOT NULL,
    event_id   text        NOT NULL,
    topic      text        NOT NULL,
    partition  integer     NOT NULL,
    "offset"   bigint      NOT NULL,
    reason     text        NOT NULL,
    held_back  integer     NOT NULL DEFAULT 0,
    blocked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, key)
);
"""

# One round trip per message: is the key blocked, and if not, claim the event id. A claim
# that conflicts (an event applied before) or waits on a twin's uncommitted claim and then
# conflicts returns claimed = false.
CLAIM_SQL = """
WITH blocked AS (
    SELECT event_id FROM consumer_blocked_keys WHERE group_name = $1 AND key = $3
), claimed AS (
    INSERT INTO consumer_inbox (group_name, event_id)
    SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM blocked)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT event_id FROM blocked) AS blocked_by, EXISTS (SELECT 1 FROM claimed) AS claimed
"""

BLOCK_SQL = """
INSERT INTO consumer_blocked_keys (group_name, key, event_id, topic, partition, "offset", reason)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (group_name, key) DO NOTHING
"""

HELD_BACK_SQL = """
UPDATE consumer_blocked_keys SET held_back = held_back + 1
 WHERE group_name = $1 AND key = $2
"""


@dataclass(frozen=True)
class Claim:
    """``blocked_by``: the dead-lettered event the key waits behind, if any; ``claimed``:
    the event id is new to the group and now recorded (in the caller's transaction)."""

    blocked_by: str | None
    claimed: bool


@dataclass(frozen=True)
class BlockedKey:
    group_name: str
    key: str
    event_id: str
    topic: str
    partition: int
    offset: int
    reason: str
    held_back: int
    blocked_at: datetime


async def claim(conn: asyncpg.Connection, group: str, event_id: str, key: str | None) -> Claim:
    row = await conn.fetchrow(CLAIM_SQL, group, event_id, key)
    return Claim(row["blocked_by"], bool(row["claimed"]))


async def block(
    conn: asyncpg.Connection,
    group: str,
    key: str,
    *,
    event_id: str,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
) -> None:
    await conn.execute(BLOCK_SQL, group, key, event_id, topic, partition, offset, reason)


async def note_held_back(conn: asyncpg.Connection, group: str, key: str) -> None:
    await conn.execute(HELD_BACK_SQL, group, key)


async def unblock(conn: asyncpg.Connection, group: str, key: str) -> str | None:
    """Let ``group`` apply ``key``'s events again; returns the event id it was blocked
    behind, or None if it was not blocked. Running consumers see it at their next message
    of that key. Re-publishing the parked messages is the operator's job (module doc)."""
    result: str | None = await conn.fetchval(
        "DELETE FROM consumer_blocked_keys WHERE group_name = $1 AND key = $2 RETURNING event_id",
        group,
        key,
    )
    return result


async def blocked_keys(conn: asyncpg.Connection, group: str | None = None) -> list[BlockedKey]:
    rows = await conn.fetch(
        'SELECT group_name, key, event_id, topic, partition, "offset", reason, held_back,'
        " blocked_at FROM consumer_blocked_keys"
        " WHERE $1::text IS NULL OR group_name = $1 ORDER BY blocked_at, key",
        group,
    )
    return [BlockedKey(**dict(row)) for row in rows]


async def forget(conn: asyncpg.Connection, group: str) -> tuple[int, int]:
    """Clear a group's inbox and blocked keys, so that it applies every event again.

    Returns (inbox rows, blocked keys) removed. The consuming service's own read models
    are its to empty; this resets only what the consumer base keeps.
    """
    async with conn.transaction():
        inbox = await conn.fetchval(
            "WITH d AS (DELETE FROM consumer_inbox WHERE group_name = $1 RETURNING 1)"
            " SELECT count(*) FROM d",
            group,
        )
        blocked = await conn.fetchval(
            "WITH d AS (DELETE FROM consumer_blocked_keys WHERE group_name = $1 RETURNING 1)"
            " SELECT count(*) FROM d",
            group,
        )
    return int(inbox), int(blocked)
