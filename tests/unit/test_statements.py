"""The member statements are composed from the parts a command needs."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from ledger.adapters.repository import load_statement, positional, save_sql

PROGRAM, MEMBER = uuid.uuid4(), uuid.uuid4()


def bound(sql: str, args: tuple[Any, ...], before: str) -> Any:
    """The argument of the placeholder that follows ``before`` in ``sql``."""
    match = re.search(re.escape(before) + r"\s*\$(\d+)", sql)
    assert match, before
    return args[int(match[1]) - 1]


def test_placeholders_are_numbered_once_each_and_casts_left_alone() -> None:
    sql, names = positional("SELECT :a::uuid, :b, :a, x::text, '{}' WHERE y = :b::int")
    assert sql == "SELECT $1::uuid, $2, $1, x::text, '{}' WHERE y = $2::int"
    assert names == ("a", "b")


def test_an_earn_loads_only_what_it_asked_for() -> None:
    at = datetime(2026, 11, 30, tzinfo=UTC)
    sql, args = load_statement(
        PROGRAM,
        member_id=MEMBER,
        idempotency_key="k",
        order_id="o-1",
        purchase_at=at,
        known_config_version=3,
    )
    for part in ("AS idempotency", "AS order_seen", "AS tier", "AS campaigns"):
        assert part in sql
    for part in ("AS lots", "AS tx", "AS cards", "AS card_owner", "AS coupon", "FROM cards"):
        assert part not in sql
    assert len(args) == 6 and f"${len(args) + 1}" not in sql
    assert bound(sql, args, "WHEN p.config_version =") == 3  # not sent again
    assert bound(sql, args, "WHERE p.program_id =") == PROGRAM
    assert bound(sql, args, "m.member_id = coalesce(") == MEMBER
    assert bound(sql, args, "i.key =") == "k"
    assert bound(sql, args, "t.order_id =") == "o-1"
    assert bound(sql, args, "b.starts_at <=") == at


def test_a_card_earn_finds_its_member_by_the_card() -> None:
    sql, args = load_statement(PROGRAM, card_token="tok", order_id="o-1")
    assert "NULL::uuid" not in sql and len(args) == 4
    assert bound(sql, args, "AND card_token =") == "tok"


def test_lots_are_loaded_with_their_bounds_even_when_unset() -> None:
    sql, args = load_statement(PROGRAM, member_id=MEMBER, load_lots=True)
    assert "AS lots" in sql and "AS tx" not in sql
    assert len(args) == 5  # the lots' bounds are parameters even when unset
    assert bound(sql, args, "o.expires_at <=") is None
    assert bound(sql, args, "t.transaction_id =") is None


def test_a_save_writes_only_the_tables_named() -> None:
    earn = save_sql(frozenset({"lots", "transactions", "idempotency_key"}))
    assert "INSERT INTO lots" in earn and "INSERT INTO idempotency_keys" in earn
    assert "cards" not in earn and "coupons" not in earn
    bare = save_sql(frozenset())
    assert "INSERT INTO events" in bare and "INSERT INTO lots" not in bare
    assert bare.rstrip().endswith("SELECT count(*) FROM m")
