"""`loyalty replay publish` and `loyalty events tail`, run as an operator would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.integration.conftest import Program, earn, enrol

LOYALTY = shutil.which("loyalty", path=str(Path(sys.executable).parent))


def _loyalty(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert LOYALTY is not None
    return subprocess.run(
        [LOYALTY, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_republish_a_member_and_tail_it(
    program: Program, api: httpx.Client, database_url: str, kafka_bootstrap: str
) -> None:
    member = enrol(api)
    for _ in range(3):
        earn(api, member, "25")
    stored = [e["event_id"] for e in api.get(f"/v1/members/{member}/events").json()["events"]]
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LEDGER_TOPIC": f"replay-{uuid.uuid4().hex[:8]}",
        "KAFKA_PARTITIONS": "2",
    }
    published = _loyalty(["replay", "publish", "--member", member], env)
    assert published.returncode == 0, published.stderr
    assert "republished 4 events" in published.stderr
    tail = _loyalty(["events", "tail", "--from-beginning", "--count", "4"], env)
    assert tail.returncode == 0, tail.stderr
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [line["event_id"] for line in lines] == stored
    assert all(line["replay"] is True and line["stream_id"] == member for line in lines)
    assert [line["type"] for line in lines] == ["MemberEnrolled"] + ["PointsEarned"] * 3


def test_replay_publish_names_a_bad_option(database_url: str, kafka_bootstrap: str) -> None:
    env = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    result = _loyalty(["replay", "publish", "--since", "2026-01-01T00:00:00"], env)
    assert result.returncode != 0 and "--since" in result.stderr
