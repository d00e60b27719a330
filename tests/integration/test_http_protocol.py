"""`loyalty serve` writes each response once per loop step (workers.HttpProtocol): what
it holds back must still go out whole and in order: on a kept-alive connection, for
pipelined requests, and before a connection it closes."""

from __future__ import annotations

import re
import socket
from urllib.parse import urlsplit


def _exchange(url: str, payload: bytes) -> bytes:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as client:
        client.sendall(payload)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    return received


def test_a_response_before_the_server_closes_the_connection_arrives_whole(
    ledger_url: str,
) -> None:
    received = _exchange(
        ledger_url, b"GET /healthz HTTP/1.1\r\nHost: ledger\r\nConnection: close\r\n\r\n"
    )
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head.lower()
    assert body == b'{"status":"ok"}'


def test_keep_alive_responses_arrive_whole_one_after_the_other(ledger_url: str) -> None:
    parts = urlsplit(ledger_url)
    assert parts.hostname and parts.port
    paths = ["/healthz", "/v1/members/00000000-0000-0000-0000-000000000000", "/healthz"]
    statuses = []
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as client:
        stream = client.makefile("rb")
        for path in paths:
            client.sendall(f"GET {path} HTTP/1.1\r\nHost: ledger\r\n\r\n".encode())
            status = stream.readline().split(b" ")[1]
            length = 0
            while (line := stream.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            body = stream.read(length)
            assert len(body) == length
            statuses.append(status)
    assert statuses == [b"200", b"401", b"200"]


def test_pipelined_requests_get_their_responses_in_order(ledger_url: str) -> None:
    requests = [
        b"GET /healthz HTTP/1.1\r\nHost: ledger\r\n\r\n",
        b"GET /v1/members/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\nHost: ledger\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: ledger\r\nConnection: close\r\n\r\n",
    ]
    received = _exchange(ledger_url, b"".join(requests))
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"200", b"401", b"200"]
    assert received.endswith(b'{"status":"ok"}')
