"""Punch cards: every `size` units of a category complete a card and earn its reward.

Units are order-line quantities: a line of 2 bags of dog food is 2 punches. Completing
a card queues its reward (command id `punch:<card>:<member>:<n>`, once per completed
card) and starts the next card with the remaining punches.

Reversals: a reversed purchase takes back its punches while they are still on the card
that was open after it: all of them for a full reversal and, for a partial one, the
reversed share of its points rounded up. Punches that went into a completed card stay,
as does the reward that card earned: it was issued, and clawing back a reward is a
refund decision the retailer makes at the till (reverse the reward's transaction).
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from uuid import UUID

import asyncpg

from rules.adapters.publishing import Cause
from rules.service_layer.triggers import reward


async def punch(
    conn: asyncpg.Connection, program_id: UUID, member_id: UUID, earned: Any, cause: Cause
) -> None:
    units: Counter[str] = Counter()
    for line in earned.lines:
        if line.HasField("category") and line.quantity > 0:
            units[line.category] += line.quantity
    if not units:
        return
    cards = await conn.fetch(
        """SELECT card_id, name, category, size, reward FROM punch_cards
            WHERE program_id = $1 AND category = ANY($2::text[]) AND retired_at IS NULL""",
        program_id,
        list(units),
    )
    for card in cards:
        quantity = units[card["category"]]
        if await conn.fetchval(
            "SELECT 1 FROM punch_entries WHERE card_id = $1 AND transaction_id = $2",
            card["card_id"],
            UUID(earned.transaction_id),
        ):
            continue
        before = await conn.fetchval(
            """INSERT INTO punch_progress (card_id, member_id, punches) VALUES ($1, $2, $3)
               ON CONFLICT (card_id, member_id)
               DO UPDATE SET punches = punch_progress.punches + $3
               RETURNING completed""",
            card["card_id"],
            member_id,
            quantity,
        )
        after = await conn.fetchrow(
            """UPDATE punch_progress SET completed = completed + punches / $3,
                      punches = punches % $3
                WHERE card_id = $1 AND member_id = $2 RETURNING completed, punches""",
            card["card_id"],
            member_id,
            card["size"],
        )
        await conn.execute(
            """INSERT INTO punch_entries (card_id, transaction_id, member_id, quantity,
                                          on_open, open_card)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            card["card_id"],
            UUID(earned.transaction_id),
            member_id,
            quantity,
            min(quantity, after["punches"]),
            after["completed"],
        )
        for number in range(before + 1, after["completed"] + 1):
            await reward(
                conn,
                command_id=f"punch:{card['card_id']}:{member_id}:{number}",
                program_id=program_id,
                member_id=member_id,
                spec=dict(card["reward"]),
                trigger="punch_card",
                detail=f"{card['name']}: card {number} complete",
                cause=cause,
            )


async def withdraw(
    conn: asyncpg.Connection, member_id: UUID, transaction_id: UUID, cause: Cause
) -> None:
    entries = await conn.fetch(
        """SELECT e.card_id, e.quantity, e.on_open, e.open_card, e.withdrawn, e.taken,
                  p.points, p.reversed_points, g.completed
             FROM punch_entries e
             JOIN purchases p USING (transaction_id)
             JOIN punch_progress g ON g.card_id = e.card_id AND g.member_id = e.member_id
            WHERE e.transaction_id = $1
              FOR UPDATE OF g""",
        transaction_id,
    )
    for entry in entries:
        points, quantity = entry["points"], entry["quantity"]
        # The reversed share of the purchase's punches, rounded up.
        share = (
            quantity
            if points <= 0
            else -(-quantity * min(entry["reversed_points"], points) // points)
        )
        due = share - entry["withdrawn"]
        if due <= 0:
            continue
        # Only punches still on the card that was open after the purchase come back off;
        # once that card completed, they earned its reward.
        still_open = entry["completed"] == entry["open_card"]
        take = min(due, entry["on_open"] - entry["taken"]) if still_open else 0
        await conn.execute(
            """UPDATE punch_progress SET punches = punches - $3
                WHERE card_id = $1 AND member_id = $2""",
            entry["card_id"],
            member_id,
            take,
        )
        await conn.execute(
            """UPDATE punch_entries SET withdrawn = $3, taken = taken + $4
                WHERE card_id = $1 AND transaction_id = $2""",
            entry["card_id"],
            transaction_id,
            share,
            take,
        )
