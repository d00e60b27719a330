"""A member's profile change reaches the services that keep copies of it: the notifier
sends the next message to the new email address and greets by the new first name; the
rules service moves the birthday reward. Real processes: ledger, relay, follow, rules,
notifier, on the embedded broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from loyalty_common.testing import eventually

from tests.integration.conftest import (
    NotifierProcess,
    Program,
    RulesProcess,
    earn,
    enrol,
    idem,
    new_program,
)

pytestmark = pytest.mark.usefixtures("relay", "follow", "rules")


@pytest.fixture
def club(database_url: str, ledger_url: str) -> Program:
    return new_program(database_url, ledger_url, "Profilklubben")


def _patch(api: httpx.Client, member: str, body: dict[str, Any]) -> None:
    response = api.patch(f"/v1/members/{member}", json=body, headers=idem())
    assert response.status_code == 200, response.text


def _row(database_url: str, sql: str, member: str) -> dict[str, Any] | None:
    async def fetch() -> dict[str, Any] | None:
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(sql, uuid.UUID(member))
        finally:
            await conn.close()
        return dict(row) if row is not None else None

    return asyncio.run(fetch())


def _text_of(notifier: NotifierProcess, mail: dict[str, Any]) -> str:
    raw = (notifier.smtp.directory / mail["file"]).read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    body = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    assert body is not None
    return str(body.get_content())


def test_a_changed_email_gets_the_next_message_greeting_by_first_name(
    club: Program, notifier: NotifierProcess
) -> None:
    old, new = (f"{name}-{uuid.uuid4().hex[:6]}@example.no" for name in ("old", "new"))
    known = "SELECT email, first_name FROM members WHERE member_id = $1"
    with club.client() as api:
        member = enrol(api, email=old, locale="nb", consents={"email": True})
        eventually(
            lambda: _row(notifier.database_url, known, member), what="the member at the notifier"
        )
        _patch(api, member, {"email": new, "first_name": "Kari"})
        eventually(
            lambda: (
                _row(notifier.database_url, known, member) == {"email": new, "first_name": "Kari"}
            ),
            what="the new email at the notifier",
        )
        earn(api, member, "5000.00")  # Silver: a TierChanged email
    mail = eventually(
        lambda: [m for m in notifier.smtp.messages() if new in m["rcpt_tos"]],
        what="the tier email at the new address",
    )
    assert len(mail) == 1 and "Silver" in mail[0]["subject"]
    assert _text_of(notifier, mail[0]).splitlines()[0] == "Hei, Kari!"
    assert not [m for m in notifier.smtp.messages() if old in m["rcpt_tos"]]


def _rewards(rules_api: httpx.Client, member: str) -> list[dict[str, Any]]:
    response = rules_api.get("/v1/rewards", params={"member_id": member})
    assert response.status_code == 200, response.text
    return list(response.json()["rewards"])


def _birthday(day: date) -> str:
    """A birthday 30 years back on ``day``'s date (29 February counts on the 28th)."""
    if (day.month, day.day) == (2, 29):
        day = day.replace(day=28)
    return day.replace(year=day.year - 30).isoformat()


def test_a_changed_birthday_moves_the_birthday_reward(club: Program, rules: RulesProcess) -> None:
    now = datetime.now(UTC)
    with (
        club.client() as api,
        httpx.Client(
            base_url=rules.url, timeout=30, headers={"Authorization": f"Bearer {club.admin_key}"}
        ) as rules_api,
    ):
        set_up = rules_api.put("/v1/triggers", json={"birthday": {"points": 100}})
        assert set_up.status_code == 200, set_up.text
        member = enrol(api, birthday=_birthday(now.date() + timedelta(days=60)), time_zone="UTC")
        stored = "SELECT birthday::text AS birthday FROM members WHERE member_id = $1"
        eventually(lambda: _row(rules.database_url, stored, member), what="the member at rules")

        def run_clock() -> None:
            ran = rules_api.post("/v1/clock/run", json={"as_of": now.isoformat()})
            assert ran.status_code == 200, ran.text

        run_clock()
        assert _rewards(rules_api, member) == []  # not the birthday (yet)

        _patch(api, member, {"birthday": _birthday(now.date())})
        eventually(
            lambda: _row(rules.database_url, stored, member) == {"birthday": _birthday(now.date())},
            what="the new birthday at rules",
        )
        run_clock()
        rewarded = eventually(
            lambda: [r for r in _rewards(rules_api, member) if r["status"] == "done"],
            what="the birthday reward",
        )
        assert [r["kind"] for r in rewarded] == ["earn_bonus"]
