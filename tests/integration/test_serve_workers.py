"""`loyalty serve` with several workers: each listens with its own socket, the kernel
spreads connections over them, a signal stops them all, and a second server on the
same port is refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from loyalty_common.ports import free_port
from loyalty_common.testing import command_path, eventually, running_process


def _env(database_url: str, port: int) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "LEDGER_PORT": str(port),
        "LEDGER_WORKERS": "2",
        "LEDGER_CLOCK_INTERVAL_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
    }


def _connections(worker: psutil.Process, port: int, status: str) -> int:
    return sum(
        1 for c in worker.net_connections(kind="tcp") if c.status == status and c.laddr.port == port
    )


def _workers(server: psutil.Process, port: int) -> list[psutil.Process]:
    """The server's children that listen on the port (not multiprocessing's helpers)."""
    return [w for w in server.children() if _connections(w, port, psutil.CONN_LISTEN)]


@contextmanager
def _serve(database_url: str, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = _env(database_url, port)
    url = f"http://127.0.0.1:{port}/healthz"
    with running_process([command_path("loyalty"), "serve"], env, url, log) as process:
        eventually(lambda: len(_workers(psutil.Process(process.pid), port)) == 2, 30, "2 workers")
        yield process, port


@pytest.fixture(scope="module")
def shared(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A server for the tests that leave it running."""
    with _serve(database_url, tmp_path_factory.mktemp("serve") / "serve.log") as served:
        yield served


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A server of the test's own, for the tests that stop it."""
    with _serve(database_url, tmp_path / "serve.log") as served:
        yield served


def test_connections_are_spread_over_the_workers(
    shared: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = shared
    clients = []
    for _ in range(24):  # one after the other, as a client pool opens them
        clients.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.005)
    try:
        workers = _workers(psutil.Process(process.pid), port)
        held = eventually(
            lambda: (
                counts
                if sum(counts := [_connections(w, port, psutil.CONN_ESTABLISHED) for w in workers])
                == 24
                else None
            ),
            10,
            "24 accepted connections",
        )
        # Hashed over two sockets, all 24 on one worker has odds of 1 in 8 million.
        assert min(held) > 0, held
    finally:
        for client in clients:
            client.close()


def test_a_second_server_on_the_port_is_refused(
    shared: tuple[subprocess.Popen[bytes], int], database_url: str
) -> None:
    _, port = shared
    second = subprocess.run(
        [command_path("loyalty"), "serve"],
        env={**os.environ, **_env(database_url, port)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in second.stderr


def test_a_signal_stops_every_worker(served: tuple[subprocess.Popen[bytes], int]) -> None:
    process, port = served
    workers = _workers(psutil.Process(process.pid), port)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_a_worker_that_dies_stops_the_server(served: tuple[subprocess.Popen[bytes], int]) -> None:
    process, port = served
    first, second = _workers(psutil.Process(process.pid), port)
    first.kill()
    assert process.wait(30) == 1  # the orchestrator restarts the whole server
    assert not (second.is_running() and second.status() != psutil.STATUS_ZOMBIE)
