"""Test fixtures' building blocks: a real database and real service processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx

from loyalty_common.embedded import EmbeddedPostgres, create_database, sibling_dsn
from loyalty_common.ports import free_port

__all__ = [
    "command_path",
    "eventually",
    "free_port",
    "fresh_database",
    "running_process",
    "service_key",
    "wait_healthy",
]

T = TypeVar("T")


def command_path(name: str) -> str:
    """A console script installed beside this Python (loyalty, rules)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found is not None, f"no {name} command; run make install"
    return found


def service_key(
    database_url: str, name: str, scopes: tuple[str, ...] = ("points:write", "ops")
) -> str:
    """A ledger service key (by default with the scopes the rules service writes with)."""
    flags = [part for scope in scopes for part in ("--scope", scope)]
    created = subprocess.run(
        [command_path("loyalty"), "service-key", "create", name, *flags],
        env={**os.environ, "DATABASE_URL": database_url},
        check=True,
        capture_output=True,
        text=True,
    )
    return str(json.loads(created.stdout)["key"])


@contextmanager
def fresh_database() -> Iterator[str]:
    """A fresh, empty database: on TEST_DATABASE_URL's server if set, else an embedded one."""
    admin = os.environ.get("TEST_DATABASE_URL")
    server = None
    if not admin:
        server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="loyalty-pg-")), delete_on_exit=True)
        admin = server.dsn()
    name = f"loyalty_test_{uuid.uuid4().hex[:8]}"
    asyncio.run(create_database(admin, name))
    try:
        yield sibling_dsn(admin, name)
    finally:
        if server is not None:
            server.stop()
        else:
            asyncio.run(_drop_database(admin, name))


async def _drop_database(admin_dsn: str, name: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@contextmanager
def running_process(
    args: list[str], env: dict[str, str], health_url: str, log_path: Path, timeout: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a service process, wait until ``health_url`` answers 200, stop it afterwards."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_healthy(process, health_url, log_path, timeout)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_healthy(
    process: subprocess.Popen[bytes], health_url: str, log_path: Path, timeout: float
) -> None:
    """Wait until ``health_url`` answers 200; fail with the log's tail if the process
    exits first or the time runs out."""
    name = Path(str(process.args[0] if isinstance(process.args, list) else process.args)).name
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(health_url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.05)


def eventually(probe: Callable[[], T | None], timeout: float = 90.0, what: str = "") -> T:
    """``probe()`` once it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        time.sleep(0.1)
