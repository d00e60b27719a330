"""`loyalty serve` with several workers: each listens on the port with a socket of its own.

uvicorn's own workers share one listening socket, and Linux hands a new connection to
whichever worker waits longest in ``accept``: keep-alive clients that connect while the
workers are idle (a checkout system's pool, a load balancer's) can all land on one
worker, which then saturates one core while the others idle. With ``SO_REUSEPORT`` each
worker has its own socket on the same port and the kernel spreads new connections over
them by address hash, as nginx's ``reuseport`` does (ADR 0015).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import socket
import threading
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

APP = "ledger.entrypoints.api:create_app"
STOP_TIMEOUT = 30.0  # seconds a worker gets to finish its requests when told to stop


class _OneWritePerStep:
    """A transport whose writes in one step of the event loop go out in one system call.

    uvicorn writes a response's status line and headers, then its body: two ``write``
    system calls per response, which on this kind of machine cost more than the Python
    that joins them."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, on a transport that writes once per loop step."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWritePerStep(transport))  # type: ignore[arg-type]


# How uvicorn serves the ledger, with one worker (uvicorn.run) or several (below).
UVICORN: dict[str, Any] = {
    "factory": True,
    "log_level": "warning",
    "access_log": False,
    "loop": "uvloop",
    "http": HttpProtocol,
}


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _worker(host: str, port: int) -> None:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Bound, not listening: the kernel sends it connections only once uvicorn listens,
    # after the application has started.
    sock.bind((host, port))
    uvicorn.Server(uvicorn.Config(APP, host=host, port=port, **UVICORN)).run(sockets=[sock])


def serve_workers(host: str, port: int, count: int) -> int:
    """Run ``count`` workers until a signal stops them, or until one of them exits (then
    the others are stopped too, and the exit code says so). The exit code."""
    # Sockets with SO_REUSEPORT share the port with any other such socket of the same
    # user: make sure no server (another `loyalty serve`, say) holds it already.
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_worker, args=(host, port)) for _ in range(count)]
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    for worker in workers:
        worker.start()
    while not stop.wait(0.5):
        if any(not worker.is_alive() for worker in workers):
            break
    failed = not stop.is_set()
    for worker in workers:
        # SIGTERM, also after a Ctrl-C that reached the workers directly: a second
        # SIGINT would make uvicorn skip waiting for the requests in progress.
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(STOP_TIMEOUT)
        if worker.is_alive():
            worker.kill()
            worker.join()
    return 1 if failed else 0
