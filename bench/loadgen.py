"""A lean HTTP/1.1 keep-alive client and the earn load loop of the benchmark.

httpx costs a few hundred microseconds of CPU per request; on a 2-core machine that
shares its cores with the server and PostgreSQL, such a client would be part of what
is measured. This client writes pre-formatted requests on plain asyncio streams and
reads responses by Content-Length, so it spends tens of microseconds per request.

Run as a child process by run.py: ``python bench/loadgen.py`` reads a JSON job on
stdin, prints ``ready`` once its connections are open, then writes its result as JSON
to the job's ``result_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.prefix = f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None

    async def request(
        self, method: str, path: str, body: bytes | None = None, idempotency_key: str | None = None
    ) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\n{self.prefix}"
        if idempotency_key is not None:
            head += f"Idempotency-Key: {idempotency_key}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        lower = header.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise HttpError(f"no Content-Length in response: {header[:200]!r}")
        end = lower.index(b"\r\n", at + 2)
        payload = await self.reader.readexactly(int(lower[at + 17 : end]))
        if b"\r\nconnection: close" in lower:
            await self.close()
        return status, payload


def earn_body(order_id: str, occurred_at: str) -> bytes:
    amount = f"{random.randint(10, 2000)}.{random.randint(0, 99):02d}"
    return json.dumps(
        {
            "order_id": order_id,
            "amount": amount,
            "currency": "NOK",
            "occurred_at": occurred_at,
            "channel": "store",
        }
    ).encode()


async def earn_load(job: dict[str, Any]) -> dict[str, Any]:
    """``concurrency`` clients earning for random members; measures one window."""
    host, port, key = job["host"], job["port"], job["key"]
    members: list[str] = job["members"]
    concurrency, warmup, duration = job["concurrency"], job["warmup"], job["duration"]
    occurred_at = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    connections = [Connection(host, port, key) for _ in range(concurrency)]
    for connection in connections:
        # One at a time: opened all at once, a burst of connections can be accepted by
        # whichever server worker wakes first, all of them on one worker.
        await connection.open()
        await asyncio.sleep(0.005)
    print("ready", flush=True)

    started = time.perf_counter()
    window_start, window_end = started + warmup, started + warmup + duration
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    total_ok = 0
    first_error: str | None = None
    run_tag = uuid.uuid4().hex[:8]
    counter = 0

    async def client(conn: Connection) -> None:
        nonlocal total_ok, first_error, counter
        while time.perf_counter() < window_end:
            counter += 1
            order = f"bench-{run_tag}-{counter}"
            path = f"/v1/members/{random.choice(members)}/earn"
            body = earn_body(order, occurred_at)
            t0 = time.perf_counter()
            try:
                status, payload = await conn.request("POST", path, body, order)
            except (OSError, asyncio.IncompleteReadError, HttpError) as exc:
                status, payload = 0, repr(exc).encode()
                await conn.close()
            t1 = time.perf_counter()
            if status == 201:
                total_ok += 1
            if window_start <= t0 and t1 <= window_end:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 201:
                    latencies.append(t1 - t0)
            if status != 201 and first_error is None:
                first_error = f"{status}: {payload[:300].decode(errors='replace')}"

    cpu: dict[str, float] = {}

    async def cpu_probe() -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        cpu["start"] = time.process_time()
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        cpu["end"] = time.process_time()

    await asyncio.gather(cpu_probe(), *(client(c) for c in connections))
    await asyncio.gather(*(c.close() for c in connections))
    return {
        "window_seconds": duration,
        "latencies": latencies,
        "statuses": {str(k): v for k, v in statuses.items()},
        "total_ok": total_ok,
        "first_error": first_error,
        "cpu_seconds": cpu.get("end", 0.0) - cpu.get("start", 0.0),
    }


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (the server uses it too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    job = json.loads(sys.stdin.readline())
    result = run_async(earn_load(job))
    # A file, not stdout: event loops may leave stdout non-blocking, and a large write
    # to a full non-blocking pipe is cut short.
    with open(job["result_path"], "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
