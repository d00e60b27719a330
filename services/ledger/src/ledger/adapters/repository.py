"""PostgreSQL persistence of member accounts: one round trip to load, one to save.

``save`` appends the new events and writes every projection row they change in a
single statement, guarded by the member's stream version: if another writer got
there first, nothing is written and the caller retries on fresh state.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from uuid_utils import uuid7

from ledger.adapters.codec import (
    MEMBER_COLUMNS,
    account_from_row,
    coupon_from_row,
    coupon_to_row,
    decode_event,
    encode_event,
    lot_from_row,
    lot_to_row,
    member_row,
    transaction_from_row,
    transaction_to_row,
)
from ledger.domain.account import MemberAccount
from ledger.domain.events import CardLinked, CardUnlinked, Event, occurred_at

_PLACEHOLDER = re.compile(r"(?<!:):([a-z_]+)")  # ``:name``, not a ``::type`` cast


@functools.cache
def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with its ``:name`` placeholders numbered for asyncpg, and the names in
    that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return _PLACEHOLDER.sub(number, sql), tuple(names)


# A command's load selects only what the command needs: PostgreSQL initialises every
# part of a plan on each execution, used or not, and that was a fifth of its work per
# earn. Ways to find the member, by the argument that names it:
_TARGETS = {
    "member_id": ":member_id::uuid",
    "card_token": "(SELECT member_id FROM cards WHERE program_id = :program_id"
    " AND card_token = :card_token)",
    "transaction_id": "(SELECT member_id FROM transactions WHERE transaction_id = :transaction_id"
    " AND program_id = :program_id)",
    "coupon_code": "(SELECT member_id FROM coupons WHERE program_id = :program_id"
    " AND code = :coupon_code)",
}

# What a command loads beside the member and its program, by the argument that asks.
_PARTS = {
    "idempotency_key": """
    (SELECT json_build_object('hash', encode(i.request_hash, 'hex'),
                              'status', i.status_code, 'response', i.response)
       FROM idempotency_keys i WHERE i.program_id = :program_id AND i.key = :idempotency_key)
        AS idempotency""",
    "load_lots": """
    CASE WHEN m.member_id IS NOT NULL THEN (
        -- One arm per access path, so that each can use its partial index; an OR across
        -- them makes the planner scan the whole lots table.
        SELECT coalesce(json_agg(l), '[]') FROM lots l WHERE l.lot_id IN (
            SELECT o.lot_id FROM lots o WHERE o.member_id = m.member_id
               AND (o.remaining > 0 OR o.pending) AND :lots_until::timestamptz IS NULL
            UNION ALL
            SELECT o.lot_id FROM lots o WHERE o.member_id = m.member_id
               AND (o.remaining > 0 OR o.pending) AND o.expires_at <= :lots_until
            UNION ALL
            SELECT o.lot_id FROM lots o WHERE o.member_id = m.member_id AND o.pending
            UNION ALL
            SELECT t.lot_id FROM transactions t WHERE t.transaction_id = :transaction_id::uuid
            UNION ALL
            SELECT (a ->> 'lot_id')::uuid FROM transactions t,
                   jsonb_array_elements(t.allocations) a
             WHERE t.transaction_id = :transaction_id)
    ) END AS lots""",
    "transaction_id": """
    (SELECT row_to_json(t) FROM transactions t
      WHERE t.transaction_id = :transaction_id AND t.member_id = m.member_id) AS tx""",
    "order_id": """
    EXISTS (SELECT 1 FROM transactions t
             WHERE t.member_id = m.member_id AND t.order_id = :order_id AND t.kind = 'earn')
        AS order_seen""",
    "load_cards": """
    (SELECT coalesce(array_agg(c.card_token), '{}') FROM cards c
      WHERE c.member_id = m.member_id) AS cards""",
    "link_card_token": """
    (SELECT c.member_id FROM cards c
      WHERE c.program_id = :program_id AND c.card_token = :link_card_token) AS card_owner""",
    "external_id": """
    (SELECT e.member_id FROM members e
      WHERE e.program_id = :program_id AND e.external_id = :external_id) AS external_owner""",
    "coupon_code": """
    (SELECT row_to_json(c) FROM coupons c
      WHERE c.program_id = :program_id AND c.code = :coupon_code
        AND c.member_id = m.member_id) AS coupon""",
    # What the rules service told the ledger (loyalty follow): the member's tier and the
    # bonus campaigns at the purchase's time (a late purchase earns as it would have then).
    "purchase_at": """
    (SELECT t.tier FROM member_tier_history t
      WHERE t.member_id = m.member_id AND t.effective_from <= :purchase_at
      ORDER BY t.effective_from DESC LIMIT 1) AS tier,
    (SELECT json_agg(b ORDER BY b.starts_at, b.campaign_id) FROM bonus_campaigns b
      WHERE b.program_id = :program_id AND b.starts_at <= :purchase_at
        AND :purchase_at < b.ends_at AND b.cancelled_at IS NULL) AS campaigns""",
}


_LOAD_CHOICES = tuple(_TARGETS.keys() | _PARTS.keys())


@functools.cache
def load_sql(asked: frozenset[str]) -> str:
    """The load of a command that gives the arguments ``asked``."""
    targets = [sql for name, sql in _TARGETS.items() if name in asked]
    target = f"coalesce({', '.join(targets)})" if targets else "NULL::uuid"
    parts = "".join(f",{sql}" for name, sql in _PARTS.items() if name in asked)
    return f"""
SELECT
    p.config_version,
    -- A configuration the caller holds already is not sent again.
    CASE WHEN p.config_version = :known_config_version THEN NULL ELSE p.config END AS config,
    m.member_id, m.external_id, m.version, m.enrolled_at, m.profile, m.available, m.pending,
    m.debt, m.lifetime_earned, m.qualifying, m.periods_closed_until,
    m.next_period_end{parts}
FROM programs p
LEFT JOIN members m ON m.member_id = {target} AND m.program_id = p.program_id
WHERE p.program_id = :program_id
"""


LOCK_SQL = "SELECT 1 FROM members WHERE member_id = $1 FOR UPDATE"

# A row lock assigns the transaction id when it is requested, so a transaction that
# waited may hold an id older than the stream's last write. Readers of the event store
# take commit-safe order to be transaction id order; for a stream that order must be
# its version order, so such a transaction restarts (with a fresh id) instead of writing.
STREAM_ORDER_SQL = """
SELECT coalesce((SELECT xact_id FROM events WHERE stream_id = $1
                  ORDER BY version DESC LIMIT 1) < pg_current_xact_id(), true)
"""


class StaleTransactionError(Exception):
    """This transaction's id is older than its stream's last write: restart it."""


async def ensure_stream_order(conn: asyncpg.Connection, stream_id: str) -> None:
    """Call after locking a stream's row, before appending to the stream."""
    if not await conn.fetchval(STREAM_ORDER_SQL, stream_id):
        raise StaleTransactionError(stream_id)


# A save writes only the tables its events change (see the load's parts for why).
# Always: the member row, guarded by the version it was loaded at, and the events.
_SAVE_MEMBER = """
WITH m AS (
    INSERT INTO members AS cur (member_id, program_id, external_id, version, enrolled_at,
                                profile, available, pending, debt, lifetime_earned,
                                qualifying, periods_closed_until, next_period_end)
    VALUES (:member_id, :program_id, :external_id, :version, :enrolled_at, :profile,
            :available, :pending, :debt, :lifetime_earned, :qualifying,
            :periods_closed_until, :next_period_end)
    ON CONFLICT (member_id) DO UPDATE SET
        version = EXCLUDED.version, profile = EXCLUDED.profile,
        available = EXCLUDED.available, pending = EXCLUDED.pending, debt = EXCLUDED.debt,
        lifetime_earned = EXCLUDED.lifetime_earned, qualifying = EXCLUDED.qualifying,
        periods_closed_until = EXCLUDED.periods_closed_until,
        next_period_end = EXCLUDED.next_period_end
    WHERE cur.version = :expected_version
    RETURNING member_id
), e AS (
    INSERT INTO events (event_id, program_id, stream_id, version, type, data, occurred_at,
                        recorded_at, actor, reason, correlation_id, causation_id, trace_context)
    SELECT x.event_id, :program_id, m.member_id::text, x.version, x.type, x.data,
           x.occurred_at, :recorded_at, :actor, :reason, :correlation_id, :causation_id,
           x.trace_context
      FROM m, jsonb_to_recordset(:events::jsonb)
           AS x(event_id uuid, version int, type text, data jsonb, occurred_at timestamptz,
                trace_context text)
    RETURNING position
)"""

# The other tables, by the parameter that carries their rows.
_SAVE_PARTS = {
    "lots": """, l AS (
    INSERT INTO lots (lot_id, member_id, earned_at, expires_at, available_at, original,
                      remaining, pending)
    SELECT x.lot_id, m.member_id, x.earned_at, x.expires_at, x.available_at, x.original,
           x.remaining, x.pending
      FROM m, jsonb_to_recordset(:lots::jsonb)
           AS x(lot_id uuid, earned_at timestamptz, expires_at timestamptz,
                available_at timestamptz, original bigint, remaining bigint, pending boolean)
    ON CONFLICT (lot_id) DO UPDATE SET remaining = EXCLUDED.remaining,
                                       pending = EXCLUDED.pending
)""",
    "transactions": """, t AS (
    INSERT INTO transactions (transaction_id, program_id, member_id, kind, points,
                              occurred_at, qualifying_points, qualifying_month, lot_id,
                              allocations, amount, currency, order_id, reversed_points,
                              reversed_qualifying, reversed_amount, returned)
    SELECT x.transaction_id, :program_id, m.member_id, x.kind, x.points, x.occurred_at,
           x.qualifying_points, x.qualifying_month, x.lot_id, x.allocations, x.amount,
           x.currency, x.order_id, x.reversed_points, x.reversed_qualifying,
           x.reversed_amount, x.returned
      FROM m, jsonb_to_recordset(:transactions::jsonb)
           AS x(transaction_id uuid, kind text, points bigint, occurred_at timestamptz,
                qualifying_points bigint, qualifying_month text, lot_id uuid,
                allocations jsonb, amount numeric, currency text, order_id text,
                reversed_points bigint, reversed_qualifying bigint, reversed_amount numeric,
                returned jsonb)
    ON CONFLICT (transaction_id) DO UPDATE SET
        reversed_points = EXCLUDED.reversed_points,
        reversed_qualifying = EXCLUDED.reversed_qualifying,
        reversed_amount = EXCLUDED.reversed_amount, returned = EXCLUDED.returned
)""",
    "linked_cards": """, linked AS (
    INSERT INTO cards (program_id, card_token, member_id)
    SELECT :program_id, token, m.member_id FROM m, unnest(:linked_cards::text[]) AS token
)""",
    "unlinked_cards": """, unlinked AS (
    DELETE FROM cards c USING m
     WHERE c.program_id = :program_id AND c.member_id = m.member_id
       AND c.card_token = ANY(:unlinked_cards::text[])
)""",
    "coupons": """, cp AS (
    INSERT INTO coupons (coupon_id, program_id, member_id, code, kind, value, currency,
                         points_cost, valid_from, valid_until, issued_at, campaign_id,
                         redeemed_at, order_id, order_amount, order_currency, transaction_id)
    SELECT x.coupon_id, :program_id, m.member_id, x.code, x.kind, x.value, x.currency,
           x.points_cost, x.valid_from, x.valid_until, x.issued_at, x.campaign_id,
           x.redeemed_at, x.order_id, x.order_amount, x.order_currency, x.transaction_id
      FROM m, jsonb_to_recordset(:coupons::jsonb)
           AS x(coupon_id uuid, code text, kind text, value numeric, currency text,
                points_cost bigint, valid_from timestamptz, valid_until timestamptz,
                issued_at timestamptz, campaign_id uuid, redeemed_at timestamptz,
                order_id text, order_amount numeric, order_currency text, transaction_id uuid)
    ON CONFLICT (coupon_id) DO UPDATE SET
        redeemed_at = EXCLUDED.redeemed_at, order_id = EXCLUDED.order_id,
        order_amount = EXCLUDED.order_amount, order_currency = EXCLUDED.order_currency,
        transaction_id = EXCLUDED.transaction_id
)""",
    "idempotency_key": """, idem AS (
    INSERT INTO idempotency_keys (program_id, key, request_hash, status_code, response)
    SELECT :program_id, :idempotency_key, :request_hash, :status_code, :response FROM m
)""",
}


@functools.cache
def save_sql(parts: frozenset[str]) -> str:
    """The save of an account whose events change the tables ``parts`` names."""
    return (
        _SAVE_MEMBER
        + "".join(sql for name, sql in _SAVE_PARTS.items() if name in parts)
        + "\nSELECT count(*) FROM m"
    )


@dataclass(frozen=True)
class IdempotencyRecord:
    key: str
    request_hash: bytes
    status: int
    response: Any


@dataclass(frozen=True)
class EventMeta:
    actor: str
    correlation_id: str
    recorded_at: datetime
    reason: str | None = None
    causation_id: str | None = None
    trace_context: str | None = None  # W3C traceparent of the request that wrote them


@dataclass
class Loaded:
    config_version: int
    config: dict[str, Any] | None  # None: the caller holds this version already
    idempotency: dict[str, Any] | None
    account: MemberAccount | None
    next_period_end: datetime | None = None
    order_seen: bool = False
    card_owner: str | None = None
    external_owner: str | None = None
    cards: list[str] = field(default_factory=list)
    tier: str | None = None
    campaigns: list[dict[str, Any]] = field(default_factory=list)


Statement = tuple[str, tuple[Any, ...]]  # SQL and its parameters


def load_statement(
    program_id: UUID,
    *,
    member_id: UUID | None = None,
    card_token: str | None = None,
    transaction_id: UUID | None = None,
    idempotency_key: str | None = None,
    load_lots: bool = False,
    lots_until: datetime | None = None,
    order_id: str | None = None,
    load_cards: bool = False,
    link_card_token: str | None = None,
    external_id: str | None = None,
    coupon_code: str | None = None,
    purchase_at: datetime | None = None,
    known_config_version: int | None = None,
) -> Statement:
    """The load of one member command: the member it names, and what it asks for. The
    program's configuration comes back as None if its version is ``known_config_version``."""
    given = {
        "program_id": program_id,
        "known_config_version": known_config_version,
        "member_id": member_id,
        "card_token": card_token,
        "transaction_id": transaction_id,
        "idempotency_key": idempotency_key,
        "load_lots": load_lots,
        "lots_until": lots_until,
        "order_id": order_id,
        "load_cards": load_cards,
        "link_card_token": link_card_token,
        "external_id": external_id,
        "coupon_code": coupon_code,
        "purchase_at": purchase_at,
    }
    # The parts and targets the command asks for (the other arguments only fill them),
    # so that one form of load is one cache entry.
    asked = frozenset([name for name in _LOAD_CHOICES if given[name] not in (None, False)])
    sql, names = positional(load_sql(asked))
    return sql, tuple([given[name] for name in names])


def loaded_from_row(row: asyncpg.Record) -> Loaded:
    """A load's row; a part the command did not ask for is absent from it."""
    account = None
    if row["member_id"] is not None:
        account = account_from_row(row)
        for lot in row.get("lots") or ():
            account.lots[str(lot["lot_id"])] = lot_from_row(lot)
        if (tx_row := row.get("tx")) is not None:
            tx = transaction_from_row(tx_row)
            account.transactions[tx.transaction_id] = tx
        account.cards = set(row.get("cards") or ())
        if (coupon_row := row.get("coupon")) is not None:
            coupon = coupon_from_row(coupon_row)
            account.coupons[coupon.coupon_id] = coupon
    card_owner, external_owner = row.get("card_owner"), row.get("external_owner")
    return Loaded(
        config_version=row["config_version"],
        config=row["config"],
        idempotency=row.get("idempotency"),
        account=account,
        next_period_end=row["next_period_end"],
        order_seen=bool(row.get("order_seen")),
        card_owner=str(card_owner) if card_owner else None,
        external_owner=str(external_owner) if external_owner else None,
        cards=list(row.get("cards") or ()),
        tier=row.get("tier"),
        campaigns=list(row.get("campaigns") or ()),
    )


async def load_member(
    conn: asyncpg.Connection,
    program_id: UUID,
    *,
    member_id: UUID | None = None,
    for_update: bool = False,
    **load: Any,
) -> Loaded | None:
    """Everything a member command needs, in one round trip (``load``: the keyword
    arguments of ``load_statement``). None: no such program."""
    if for_update and member_id is not None:
        await conn.execute(LOCK_SQL, member_id)
        await ensure_stream_order(conn, str(member_id))
    sql, args = load_statement(program_id, member_id=member_id, **load)
    row = await conn.fetchrow(sql, *args)
    if row is None:
        return None
    if for_update and member_id is None and row["member_id"] is not None:
        return await load_member(
            conn, program_id, member_id=row["member_id"], for_update=True, **load
        )
    return loaded_from_row(row)


async def load_members(conn: asyncpg.Connection, loads: list[Statement]) -> list[Loaded] | None:
    """Several commands' loads (``load_statement`` each), pipelined: one round trip per
    statement form. None: some command's program does not exist."""
    loaded: list[Loaded | None] = [None] * len(loads)
    for sql, indexes in _forms(loads).items():
        rows = await conn.fetchmany(sql, [loads[i][1] for i in indexes])
        if len(rows) != len(indexes):
            return None
        for index, row in zip(indexes, rows, strict=True):
            loaded[index] = loaded_from_row(row)
    return [item for item in loaded if item is not None]


def _forms(statements: list[Statement]) -> dict[str, list[int]]:
    """The statements' indexes by their SQL, for one pipelined round trip per form."""
    forms: dict[str, list[int]] = {}
    for index, (sql, _) in enumerate(statements):
        forms.setdefault(sql, []).append(index)
    return forms


def save_statement(
    program_id: UUID,
    account: MemberAccount,
    *,
    next_period_end: datetime,
    meta: EventMeta,
    idempotency: IdempotencyRecord | None = None,
) -> Statement:
    """The statement that appends the account's new events and updates its projections,
    guarded by its stream version: it counts 0 if another writer got there first."""
    events = account.new_events
    first_version = account.version - len(events) + 1
    encoded = []
    for offset, event in enumerate(events):
        event_type, data = encode_event(event)
        encoded.append(
            {
                "event_id": str(uuid7()),
                "version": first_version + offset,
                "type": event_type,
                "data": data,
                "occurred_at": (occurred_at(event) or meta.recorded_at).isoformat(),
                "trace_context": meta.trace_context,
            }
        )
    given: dict[str, Any] = dict(
        zip(MEMBER_COLUMNS, member_row(account, program_id, next_period_end), strict=True)
    )
    given |= {
        "expected_version": first_version - 1,
        "events": encoded,
        "recorded_at": meta.recorded_at,
        "actor": meta.actor,
        "reason": meta.reason,
        "correlation_id": meta.correlation_id,
        "causation_id": meta.causation_id,
    }
    parts = {
        "lots": [lot_to_row(account.lots[i]) for i in sorted(account.touched_lots)],
        "transactions": [
            transaction_to_row(account.transactions[i])
            for i in sorted(account.touched_transactions)
        ],
        "linked_cards": [e.card_token for e in events if isinstance(e, CardLinked)],
        "unlinked_cards": [e.card_token for e in events if isinstance(e, CardUnlinked)],
        "coupons": [coupon_to_row(account.coupons[i]) for i in sorted(account.touched_coupons)],
    }
    given |= {name: rows for name, rows in parts.items() if rows}
    if idempotency is not None:
        given |= {
            "idempotency_key": idempotency.key,
            "request_hash": idempotency.request_hash,
            "status_code": idempotency.status,
            "response": idempotency.response,
        }
    sql, names = positional(save_sql(frozenset(_SAVE_PARTS.keys() & given.keys())))
    return sql, tuple([given[name] for name in names])


async def save_member(
    conn: asyncpg.Connection,
    program_id: UUID,
    account: MemberAccount,
    *,
    next_period_end: datetime,
    meta: EventMeta,
    idempotency: IdempotencyRecord | None = None,
) -> bool:
    """Append the account's new events and update its projections. False: lost a race."""
    sql, args = save_statement(
        program_id, account, next_period_end=next_period_end, meta=meta, idempotency=idempotency
    )
    saved: int = await conn.fetchval(sql, *args)
    return saved == 1


async def save_members(
    conn: asyncpg.Connection, saves: list[Statement]
) -> list[bool | asyncpg.PostgresError]:
    """Several saves, pipelined: one round trip and one transaction per statement form
    (a save that touches coupons has its own form). Each save's outcome: saved, lost a
    race (False), or the error that rolled back every save of its form (a constraint, a
    deadlock)."""
    outcomes: list[bool | asyncpg.PostgresError] = [False] * len(saves)
    for sql, indexes in _forms(saves).items():
        try:
            rows = await conn.fetchmany(sql, [saves[i][1] for i in indexes])
        except asyncpg.PostgresError as exc:
            for index in indexes:
                outcomes[index] = exc
            continue
        for index, row in zip(indexes, rows, strict=True):
            outcomes[index] = row[0] == 1
    return outcomes


async def member_events(
    conn: asyncpg.Connection,
    member_id: UUID,
    *,
    after_version: int = 0,
    limit: int | None = None,
    known_at: datetime | None = None,
) -> list[asyncpg.Record]:
    """A member's events in stream order; with ``known_at``, those the ledger had recorded
    by then: the stream up to its first event recorded later, so that what is read is
    always a whole prefix of the stream (a later version never without an earlier one)."""
    return list(
        await conn.fetch(
            """SELECT position, event_id, stream_id, version, type, data, occurred_at, recorded_at,
                  actor, reason, correlation_id, causation_id
             FROM events
            WHERE stream_id = $1 AND version > $2
              AND ($4::timestamptz IS NULL OR version < coalesce(
                    (SELECT min(version) FROM events
                      WHERE stream_id = $1 AND recorded_at > $4), 2147483647))
            ORDER BY version LIMIT $3""",
            str(member_id),
            after_version,
            limit,
            known_at,
        )
    )


def decode_stream(records: list[asyncpg.Record]) -> list[tuple[Event, datetime]]:
    """Events with the times the ledger recorded them."""
    return [(decode_event(r["type"], r["data"]), r["recorded_at"]) for r in records]


async def refresh_next_period_end(
    conn: asyncpg.Connection, member_id: UUID, next_period_end: datetime
) -> None:
    """Store a recomputed ``next_period_end`` (it derives from the program's configuration,
    not from events, so a configuration change can leave it stale)."""
    await conn.execute(
        "UPDATE members SET next_period_end = $2 WHERE member_id = $1", member_id, next_period_end
    )


# Members by a key a checkout knows them by, each way by an index (migration 0010 adds
# the email and phone ones): the profile's email is matched lower-cased, as indexed.
_FIND_BY = {
    "external_id": "m.external_id = $2",
    "card_token": "m.member_id IN (SELECT c.member_id FROM cards c"
    " WHERE c.program_id = $1 AND c.card_token = $2)",
    "email": "lower(m.profile ->> 'email') = lower($2)",
    "phone": "m.profile ->> 'phone' = $2",
}
FIND_LIMIT = 100


def find_members_sql(key: str) -> str:
    """The look-up of a program's members by ``key`` (one of ``_FIND_BY``): $1 the
    program, $2 the value; oldest enrolment first, with their cards."""
    return f"""
SELECT m.member_id, m.external_id, m.version, m.enrolled_at, m.profile, m.available,
       m.pending, m.debt, m.lifetime_earned, m.qualifying, m.periods_closed_until,
       (SELECT coalesce(array_agg(c.card_token ORDER BY c.card_token), '{{}}') FROM cards c
         WHERE c.member_id = m.member_id) AS cards
  FROM members m
 WHERE m.program_id = $1 AND {_FIND_BY[key]}
 ORDER BY m.enrolled_at, m.member_id
 LIMIT {FIND_LIMIT}"""


async def find_members(
    conn: asyncpg.Connection, program_id: UUID, key: str, value: str
) -> list[MemberAccount]:
    """The program's members whose ``key`` is ``value``, each with its cards."""
    accounts = []
    for row in await conn.fetch(find_members_sql(key), program_id, value):
        account = account_from_row(row)
        account.cards = set(row["cards"])
        accounts.append(account)
    return accounts
