"""Quiet hours in the member's time zone: when a message waits, and until when."""

from __future__ import annotations

from datetime import UTC, datetime

from notifier.service_layer.deciding import quiet_until

NIGHT = {"start": "21:00", "end": "08:00"}
LUNCH = {"start": "11:30", "end": "13:00"}


def test_outside_quiet_hours_nothing_waits() -> None:
    assert quiet_until(datetime(2026, 6, 1, 12, tzinfo=UTC), "Europe/Oslo", NIGHT) is None
    assert quiet_until(datetime(2026, 6, 1, 12, tzinfo=UTC), "Europe/Oslo", None) is None


def test_a_night_window_crosses_midnight_in_the_members_zone() -> None:
    # 20:30 UTC is 22:30 in Oslo (summer): quiet until 08:00 Oslo the next day.
    at = datetime(2026, 6, 1, 20, 30, tzinfo=UTC)
    assert quiet_until(at, "Europe/Oslo", NIGHT) == datetime(2026, 6, 2, 6, tzinfo=UTC)
    # 05:00 UTC is 07:00 Oslo: quiet until 08:00 the same day.
    at = datetime(2026, 6, 2, 5, tzinfo=UTC)
    assert quiet_until(at, "Europe/Oslo", NIGHT) == datetime(2026, 6, 2, 6, tzinfo=UTC)
    # The same instant is 08:00 in Helsinki: its night has just ended.
    assert quiet_until(at, "Europe/Helsinki", NIGHT) is None


def test_a_window_within_one_day() -> None:
    at = datetime(2026, 1, 15, 11, 0, tzinfo=UTC)  # 12:00 in Oslo (winter)
    assert quiet_until(at, "Europe/Oslo", LUNCH) == datetime(2026, 1, 15, 12, tzinfo=UTC)
    assert quiet_until(datetime(2026, 1, 15, 12, 0, tzinfo=UTC), "Europe/Oslo", LUNCH) is None
