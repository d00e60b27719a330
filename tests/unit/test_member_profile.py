"""A member's profile changes in the domain: one event with only what changed."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from ledger.adapters.codec import decode_event, encode_event
from ledger.domain.account import MemberAccount
from ledger.domain.events import PROFILE_FIELDS, MemberEnrolled, MemberProfileChanged

NOW = datetime(2026, 11, 23, 10, tzinfo=UTC)


def kari() -> MemberAccount:
    return MemberAccount.enrol(
        MemberEnrolled(
            member_id="0b9e7c52-1f3a-4d86-9e2b-5c7a1d3f8e40",
            external_id="crm-1",
            enrolled_at=datetime(2026, 1, 1, tzinfo=UTC),
            email="kari@example.no",
            phone="+4791234567",
            birthday=date(1990, 5, 17),
            locale="nb",
            first_name="Kari",
        )
    )


def test_only_what_changes_is_recorded_and_null_clears() -> None:
    account = kari()
    event = account.change_profile(
        {"email": "kari.n@example.no", "phone": None, "first_name": "Kari", "last_name": None},
        now=NOW,
    )
    assert event == MemberProfileChanged(
        changed_at=NOW, email="kari.n@example.no", cleared=("phone",)
    )
    assert (account.email, account.phone, account.first_name) == (
        "kari.n@example.no",
        None,
        "Kari",
    )
    assert account.birthday == date(1990, 5, 17) and account.version == 2


def test_nothing_changes_nothing_is_recorded() -> None:
    account = kari()
    assert account.change_profile({"locale": "nb", "time_zone": None}, now=NOW) is None
    assert account.change_profile({}, now=NOW) is None
    assert len(account.new_events) == 1 and account.version == 1


def test_the_stream_folds_to_the_same_profile_through_the_codec() -> None:
    account = kari()
    account.change_profile(
        {"birthday": date(1991, 2, 3), "locale": None, "last_name": "Nordmann"}, now=NOW
    )
    account.change_profile({"time_zone": "Europe/Oslo", "email": None}, now=NOW)
    stored = [decode_event(*encode_event(e)) for e in account.new_events]
    folded = MemberAccount.from_events(stored)
    for name in PROFILE_FIELDS:
        assert getattr(folded, name) == getattr(account, name), name
    assert folded.birthday == date(1991, 2, 3) and folded.locale is None


def test_only_profile_fields_can_change() -> None:
    with pytest.raises(AssertionError):
        kari().change_profile({"external_id": "crm-2"}, now=NOW)
