"""The consumer's error policy and dead-letter headers, without a broker or database."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from google.protobuf.message import DecodeError
from loyalty_common.consumer.policy import (
    MAX_ERROR_MESSAGE_BYTES,
    FailureTally,
    Message,
    MissingEventIdError,
    RetryPolicy,
    dead_letter_headers,
    event_id_from_headers,
    headers_dict,
    held_back_headers,
)


def message(
    headers: tuple[tuple[str, bytes], ...] = (("event_id", b"e-1"),),
    key: bytes | None = b"member-1",
    event_id: str = "e-1",
) -> Message:
    return Message(
        topic="loyalty.ledger.events.v1",
        partition=2,
        offset=41,
        key=key,
        value=b"\x0a\x01x",
        headers=headers,
        timestamp_ms=0,
        event_id=event_id,
    )


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, multiplier=2, max_delay=3)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]
    assert policy.delay(10_000) == 3  # no float overflow in a long outage


def test_ordinary_errors_retry_until_the_last_attempt() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.1, multiplier=2)
    tally = FailureTally()
    steps = [policy.after_failure(ValueError("bad"), tally) for _ in range(3)]
    assert steps == [0.1, 0.2, None]
    assert tally.attempts == 3


def test_one_attempt_dead_letters_at_the_first_failure() -> None:
    assert RetryPolicy(attempts=1).after_failure(KeyError("x"), FailureTally()) is None


@pytest.mark.parametrize("error", [MissingEventIdError("no id"), DecodeError("truncated")])
def test_hopeless_errors_dead_letter_at_once(error: Exception) -> None:
    tally = FailureTally()
    assert RetryPolicy(attempts=5).after_failure(error, tally) is None
    assert tally.attempts == 1


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("closed"),
        asyncpg.SerializationError("retry"),
        asyncpg.exceptions.CannotConnectNowError("starting up"),
    ],
)
def test_outages_retry_without_limit_and_do_not_use_up_attempts(error: Exception) -> None:
    policy = RetryPolicy(attempts=2, base_delay=1, max_delay=8)
    tally = FailureTally()
    delays = [policy.after_failure(error, tally) for _ in range(50)]
    assert delays[:5] == [1, 2, 4, 8, 8] and set(delays[5:]) == {8}
    assert policy.after_failure(ValueError("real"), tally) == 1  # first counted failure
    assert policy.after_failure(ValueError("real"), tally) is None
    assert (tally.failures, tally.outages, tally.attempts) == (2, 50, 52)


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"base_delay": -1}, {"base_delay": 5, "max_delay": 1}, {"multiplier": 0.5}],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_event_id_comes_from_the_first_nonempty_header() -> None:
    assert event_id_from_headers([("type", b"PointsEarned"), ("event_id", b"abc")]) == "abc"
    assert event_id_from_headers([("event_id", b"")]) is None
    assert event_id_from_headers([]) is None


def test_message_header_and_key_text() -> None:
    m = message(headers=(("a", b"1"), ("a", b"2")), key=b"\xffm")
    assert m.header("a") == b"1" and m.header("b") is None
    assert m.key_text == "\\xffm"
    assert message(key=None).key_text is None
    assert m.where == "loyalty.ledger.events.v1/2/41"


def test_dead_letter_headers_keep_the_original_and_say_what_failed() -> None:
    original = (
        ("event_id", b"e-1"),
        ("type", b"PointsEarned"),
        ("dlq.reason", b"failed"),
    )  # from an earlier trip through the DLQ
    headers = dead_letter_headers(
        message(original), group="rules", error=ValueError("boom"), attempts=5
    )
    assert headers[:2] == [("event_id", b"e-1"), ("type", b"PointsEarned")]
    assert [k for k, _ in headers].count("dlq.reason") == 1
    values = headers_dict(headers)
    assert values["dlq.reason"] == "failed"
    assert values["dlq.error_type"] == "builtins.ValueError"
    assert values["dlq.error_message"] == "boom"
    assert values["dlq.attempts"] == "5"
    assert (
        values["dlq.original_topic"],
        values["dlq.original_partition"],
        values["dlq.original_offset"],
        values["dlq.group"],
    ) == ("loyalty.ledger.events.v1", "2", "41", "rules")
    assert "dlq.at" in values


def test_dead_letter_headers_name_an_event_found_by_the_fallback() -> None:
    headers = dead_letter_headers(message(headers=()), group="g", error=KeyError("k"), attempts=1)
    assert headers[0] == ("event_id", b"e-1")
    unnamed = dead_letter_headers(
        message(headers=(), event_id=""),
        group="g",
        error=MissingEventIdError("no event_id header"),
        attempts=1,
    )
    assert "event_id" not in headers_dict(unnamed)


def test_long_error_messages_are_cut_on_a_character_boundary() -> None:
    headers = headers_dict(
        dead_letter_headers(message(), group="g", error=ValueError("ø" * 5000), attempts=1)
    )
    text = headers["dlq.error_message"]
    assert set(text) == {"ø"} and len(text.encode()) <= MAX_ERROR_MESSAGE_BYTES


def test_error_without_text_is_named_by_its_repr() -> None:
    headers = headers_dict(
        dead_letter_headers(message(), group="g", error=RuntimeError(), attempts=1)
    )
    assert headers["dlq.error_message"] == "RuntimeError()"


def test_held_back_headers_name_the_event_waited_behind() -> None:
    values = headers_dict(held_back_headers(message(), group="rules", behind="e-0"))
    assert (values["dlq.reason"], values["dlq.held_back_behind"], values["event_id"]) == (
        "held_back",
        "e-0",
        "e-1",
    )
    assert "dlq.error_type" not in values
