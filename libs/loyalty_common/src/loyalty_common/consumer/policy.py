"""The consumer's pure parts: the message handlers get, the error policy, and the headers
written on dead-lettered and held-back messages. No I/O here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from google.protobuf.message import DecodeError

EVENT_ID_HEADER = "event_id"
DLQ_HEADER_PREFIX = "dlq."
# Long enough for a useful error message, short enough to stay far below any
# broker's message size limit.
MAX_ERROR_MESSAGE_BYTES = 2000


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka record as handlers see it, with its event id resolved."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    event_id: str

    def header(self, name: str) -> bytes | None:
        """The first header of that name, as Kafka allows repeats."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def key_text(self) -> str | None:
        """The key as text (member ids are ASCII); undecodable bytes stay visible as escapes."""
        if self.key is None:
            return None
        return self.key.decode("utf-8", errors="backslashreplace")

    @property
    def where(self) -> str:
        """topic/partition/offset: names a record that has no event id."""
        return f"{self.topic}/{self.partition}/{self.offset}"


class MissingEventIdError(Exception):
    """A message has no event_id header and no fallback could name its event."""


def event_id_from_headers(headers: Iterable[tuple[str, bytes]]) -> str | None:
    for key, value in headers:
        if key == EVENT_ID_HEADER and value:
            return value.decode("utf-8", errors="backslashreplace")
    return None


@dataclass
class FailureTally:
    """How one message has failed so far: counted failures and (uncounted) outages."""

    failures: int = 0
    outages: int = 0

    @property
    def attempts(self) -> int:
        return self.failures + self.outages


OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # sockets, including TimeoutError
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.TransactionRollbackError,  # serialization failures and deadlocks
)


@dataclass(frozen=True)
class RetryPolicy:
    """What the consumer does when handling a message fails.

    - ``outage_errors``: the database or network is away, not the message at fault.
      Retried without limit (at most ``max_delay`` apart) and not counted: dead-lettering
      every message during a database failover would park half the members.
    - ``dead_letter_at_once``: retrying cannot help (the value does not decode, no event
      id); the message goes to the dead-letter topic after its first failure.
    - anything else: the handler runs ``attempts`` times in all, ``base_delay`` seconds
      apart, growing by ``multiplier`` up to ``max_delay``; then the message is
      dead-lettered.
    """

    attempts: int = 5
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    dead_letter_at_once: tuple[type[BaseException], ...] = (MissingEventIdError, DecodeError)
    outage_errors: tuple[type[BaseException], ...] = field(default=OUTAGE_ERRORS)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    def delay(self, retry: int) -> float:
        """Seconds before the ``retry``-th retry (1-based)."""
        exponent = max(retry - 1, 0)
        # Past this exponent the cap applies anyway; avoids float overflow on long outages.
        if exponent > 64:
            return self.max_delay
        return min(self.max_delay, self.base_delay * self.multiplier**exponent)

    def after_failure(self, error: BaseException, tally: FailureTally) -> float | None:
        """Record ``error`` in ``tally``; seconds to wait before trying again, or None to
        dead-letter the message now."""
        if isinstance(error, self.dead_letter_at_once):
            tally.failures += 1
            return None
        if isinstance(error, self.outage_errors):
            tally.outages += 1
            return self.delay(tally.outages)
        tally.failures += 1
        if tally.failures >= self.attempts:
            return None
        return self.delay(tally.failures)


def _truncate(text: str, limit: int) -> bytes:
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore").encode("utf-8")


def _origin_headers(message: Message, group: str, reason: str) -> list[tuple[str, bytes]]:
    # A replay strips every dlq.* header and re-publishes the rest unchanged.
    kept = [(k, v) for k, v in message.headers if not k.startswith(DLQ_HEADER_PREFIX)]
    if message.event_id and event_id_from_headers(kept) is None:
        kept.append((EVENT_ID_HEADER, message.event_id.encode()))
    return [
        *kept,
        ("dlq.reason", reason.encode()),
        ("dlq.original_topic", message.topic.encode()),
        ("dlq.original_partition", str(message.partition).encode()),
        ("dlq.original_offset", str(message.offset).encode()),
        ("dlq.group", group.encode()),
        ("dlq.at", datetime.now(UTC).isoformat().encode()),
    ]


def dead_letter_headers(
    message: Message, *, group: str, error: BaseException, attempts: int
) -> list[tuple[str, bytes]]:
    """The original headers plus why and where from: the message failed ``attempts`` times."""
    error_type = type(error)
    return [
        *_origin_headers(message, group, "failed"),
        ("dlq.error_type", f"{error_type.__module__}.{error_type.__qualname__}".encode()),
        ("dlq.error_message", _truncate(str(error) or repr(error), MAX_ERROR_MESSAGE_BYTES)),
        ("dlq.attempts", str(attempts).encode()),
    ]


def held_back_headers(message: Message, *, group: str, behind: str) -> list[tuple[str, bytes]]:
    """The original headers plus the dead-lettered event its key waits behind."""
    return [
        *_origin_headers(message, group, "held_back"),
        ("dlq.held_back_behind", behind.encode()),
    ]


def headers_dict(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Headers as text, the last of each name winning: for logs and tests."""
    return {k: v.decode("utf-8", errors="backslashreplace") for k, v in headers}
