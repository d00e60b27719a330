"""EventConsumer: one consumer-group member applying messages to PostgreSQL exactly once.

The loop, in the style of kstreams: a running flag, a processing lock held for the whole
life of one message (handle, dead-letter or park, commit its offset), and an explicit
error policy (``RetryPolicy``). Per message:

1. Resolve its event id (the ``event_id`` header, else the caller's fallback).
2. In one transaction: check that its key is not blocked and claim the event id in the
   inbox (one statement), then run the handler. A claimed-before event id is a
   redelivery: skipped. A blocked key: the message is parked, not applied.
3. On failure: retry with exponential backoff; after the last attempt publish it to the
   dead-letter topic and block its key, so the member's later events wait behind it.
4. Only then commit the offset. A crash before that redelivers the message, and the
   inbox skips it.

Rebalances: partitions are revoked only after the message in hand is finished and its
offset committed (a retry backoff in progress is cut short instead: the message is left
uncommitted for the next owner, unapplied). ``stop()`` does the same, then leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.client import ConnectionGroup
from aiokafka.errors import ConsumerStoppedError, KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import TopicPartition
from prometheus_client import Counter, Gauge

from loyalty_common.consumer import inbox
from loyalty_common.consumer.policy import (
    FailureTally,
    Message,
    MissingEventIdError,
    RetryPolicy,
    dead_letter_headers,
    event_id_from_headers,
    held_back_headers,
)
from loyalty_common.kafka import ensure_topic
from loyalty_common.telemetry import TRACEPARENT, continued

# In the process's default registry, which the services export at /metrics.
CONSUMER_LAG = Gauge(
    "loyalty_consumer_lag_messages",
    "Messages of a partition not yet settled by a consumer group",
    ["group", "topic", "partition"],
)
DEAD_LETTERED = Counter(
    "loyalty_consumer_dead_lettered_total",
    "Messages a consumer group gave up on and sent to the dead-letter topic",
    ["group", "topic"],
)

log = structlog.get_logger("consumer")

Handler = Callable[[asyncpg.Connection, Message], Awaitable[None]]
# Names the event of a message without an event_id header; gets the message with
# event_id "" and may raise (the message is then dead-lettered).
EventIdOf = Callable[[Message], str]


def _tp_text(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


class _Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # event id already in the inbox: a redelivery, skipped


@dataclasses.dataclass
class Counts:
    """Messages settled since start, by outcome (metrics come from here)."""

    applied: int = 0
    duplicates: int = 0  # event id already in the inbox: redelivered, skipped
    dead_lettered: int = 0
    held_back: int = 0

    @property
    def settled(self) -> int:
        return self.applied + self.duplicates + self.dead_lettered + self.held_back


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: EventConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner._on_assigned(assigned)


class EventConsumer:
    """Consumes ``topics`` as member of ``group``; ``handler(conn, message)`` runs inside
    the transaction that also records the event id, once per event id and group.

    Dead-lettered and parked messages go to ``dlq_topic``, by default ``<topic>.dlq``
    (created at start unless ``ensure_dlq`` is false). ``block_keys=False`` turns off
    holding back a key's later events, for consumers to whom order does not matter.
    ``idempotence`` is for the dead-letter producer: on for Apache Kafka, off for the
    embedded broker, which lacks it. Not reentrant: a handler must not call ``stop()``.

    Shutdown: ``await consumer.stop()``, then await the ``run()`` task. Against the
    embedded broker a group's join takes about half the session timeout (5 s by default);
    ``consumer_options={"session_timeout_ms": ...}`` shortens it in dev and tests.
    """

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        handler: Handler,
        topics: Sequence[str],
        group: str,
        bootstrap: str,
        retry: RetryPolicy | None = None,
        dlq_topic: str | None = None,
        event_id_of: EventIdOf | None = None,
        block_keys: bool = True,
        idempotence: bool = False,
        ensure_dlq: bool = True,
        dlq_replication_factor: int = 1,
        poll_timeout: float = 0.5,
        revoke_timeout: float = 60.0,
        auto_offset_reset: str = "earliest",
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(topics, str):
            raise TypeError("topics is a sequence of topic names")
        self.pool, self.handler, self.topics = pool, handler, list(topics)
        self.group, self.bootstrap = group, bootstrap
        self.retry = retry or RetryPolicy()
        self.dlq_topic, self.event_id_of = dlq_topic, event_id_of
        self.block_keys, self.idempotence = block_keys, idempotence
        self.ensure_dlq, self.dlq_replication_factor = ensure_dlq, dlq_replication_factor
        self.poll_timeout, self.revoke_timeout = poll_timeout, revoke_timeout
        self.auto_offset_reset = auto_offset_reset
        self.consumer_options = consumer_options or {}
        self.log = log.bind(group=group)

        self.running = False
        self._stop_requested = False
        self.counts = Counts()
        self._lock = asyncio.Lock()  # held while one message is in hand
        self._wake = asyncio.Event()  # cuts a retry backoff short (stop, revocation)
        self._loop_idle = asyncio.Event()  # the run loop is not inside getmany
        self._loop_idle.set()
        self._owned: set[TopicPartition] = set()
        self._revoking: set[TopicPartition] = set()
        self._unseeded: set[TopicPartition] = set()
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: Any = None
        self._producer: Any = None

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group (``run()`` does this itself if needed)."""
        if self._stop_requested or self._consumer is not None:
            return
        if self.ensure_dlq:
            for topic in self._dlq_topics():
                await ensure_topic(
                    self.bootstrap,
                    topic,
                    partitions=1,
                    replication_factor=self.dlq_replication_factor,
                )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=self.idempotence,
            linger_ms=0,
            request_timeout_ms=10_000,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self.auto_offset_reset,
            **self.consumer_options,
        )
        consumer.subscribe(self.topics, listener=_Rebalance(self))
        try:
            await producer.start()
            await consumer.start()
        except BaseException:
            await producer.stop()
            await consumer.stop()
            raise
        self._producer, self._consumer = producer, consumer
        if self._stop_requested:  # stop() came during the join
            await self._close()
            return
        self.running = True
        for topic in self.topics:  # exported from the start, at 0
            DEAD_LETTERED.labels(self.group, topic)
        self.log.info("consumer_started", topics=self.topics)

    async def run(self) -> None:
        """Consume until ``stop()``; starts first if needed. An error outside the error
        policy (the ``on_applied`` hook, a bug here) stops the consumer without committing
        the message in hand, and is raised."""
        if self._consumer is None and not self._stop_requested:
            await self.start()
        self._loop_idle.clear()
        try:
            while self.running:
                if self._unseeded:
                    await self._seed_committed()
                try:
                    batch = await self._consumer.getmany(
                        timeout_ms=int(self.poll_timeout * 1000), max_records=1
                    )
                except ConsumerStoppedError:
                    break
                for records in batch.values():
                    for record in records:
                        async with self._lock:
                            if not self.running:
                                break  # stopping: leave it uncommitted for the next owner
                            await self._consume(record)
        except BaseException:
            self.running = False
            await self._close()
            raise
        finally:
            self._loop_idle.set()

    async def stop(self) -> None:
        """Finish the message in hand (and commit its offset), then leave the group.
        Called during the join, it returns at once and ``run()`` leaves when the join
        completes. Final: a stopped consumer does not start again."""
        self._stop_requested = True
        self.running = False
        self._wake.set()
        async with self._lock:
            pass  # the message in hand is settled and committed
        await self._loop_idle.wait()
        await self._close()

    async def __aenter__(self) -> EventConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await self._leave_first_generation(consumer)
            await consumer.stop()  # no auto-commit; sends LeaveGroup
            self.log.info("consumer_stopped")
        if producer is not None:
            await producer.stop()
        self._owned.clear()
        self._committed.clear()

    async def _leave_first_generation(self, consumer: Any) -> None:
        """Leave a group whose generation is 0 ourselves.

        aiokafka sends LeaveGroup only from generation 1 on (Apache Kafka's first); tansu
        numbers the first generation 0, so a stopped member would linger until its session
        timed out and hold up the next member's join. Private aiokafka parts, best effort:
        if they change, the member merely times out as before.
        """
        try:
            coordinator = consumer._coordinator
            if (
                coordinator is None
                or coordinator.generation != 0
                or not coordinator.member_id
                or coordinator.coordinator_id is None
            ):
                return
            member_id, node = coordinator.member_id, coordinator.coordinator_id
            await coordinator.close()  # heartbeats end; aiokafka itself skips the leave
            await consumer._client.send(
                node, LeaveGroupRequest(self.group, member_id), group=ConnectionGroup.COORDINATION
            )
        except Exception as exc:
            self.log.warning("leave_group_failed", error=repr(exc))

    # -- hooks ------------------------------------------------------------------------

    async def on_applied(self, message: Message) -> None:
        """Called after the handler's transaction committed, before the offset commit.
        An exception here acts as a crash: the offset stays uncommitted."""

    # -- lag --------------------------------------------------------------------------

    def lag(self) -> dict[TopicPartition, int]:
        """Messages not yet settled per assigned partition: highwater minus committed
        offset. Partitions not fetched from yet (highwater unknown) are left out."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags: dict[TopicPartition, int] = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            committed = self._committed.get(tp)
            if highwater is not None and committed is not None:
                lags[tp] = max(0, highwater - committed)
                CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(lags[tp])
        return lags

    async def _seed_committed(self) -> None:
        for tp in list(self._unseeded):
            self._unseeded.discard(tp)
            if tp not in self._owned:
                continue
            try:
                committed = await self._consumer.committed(tp)
                if committed is None:  # nothing committed yet: where consumption starts
                    committed = await self._consumer.position(tp)
            except KafkaError as exc:
                self.log.warning(
                    "committed_offset_unknown", partition=_tp_text(tp), error=repr(exc)
                )
                continue
            self._committed.setdefault(tp, committed)

    # -- rebalance --------------------------------------------------------------------

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owned = set(assigned)
        self._unseeded = set(assigned)
        self.log.info("partitions_assigned", partitions=sorted(map(_tp_text, assigned)))

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return  # aiokafka's call before the first join
        self._revoking = set(revoked)
        self._wake.set()
        try:
            # A handler slower than this is left to finish; its offset commit then fails
            # and the next owner's inbox skips the redelivered message.
            await asyncio.wait_for(self._lock.acquire(), self.revoke_timeout)
        except TimeoutError:
            self.log.warning("revoked_with_message_in_hand", timeout=self.revoke_timeout)
        else:
            self._lock.release()
        finally:
            self._revoking = set()
            self._owned -= revoked
            for tp in revoked:
                self._committed.pop(tp, None)
        self.log.info("partitions_revoked", partitions=sorted(map(_tp_text, revoked)))

    def _abandon(self, tp: TopicPartition) -> bool:
        return not self.running or tp in self._revoking

    async def _pause(self, tp: TopicPartition, seconds: float) -> bool:
        """Wait before a retry; False when the message must be left (stop, revocation)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            self._wake.clear()
            if self._abandon(tp):
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    # -- one message ------------------------------------------------------------------

    async def _consume(self, record: Any) -> None:
        tp = TopicPartition(record.topic, record.partition)
        if tp not in self._owned:
            return  # fetched before a revocation; the next owner reads it
        message, missing = self._message(record)
        headers = dict(message.headers)
        # The trace and correlation id of whatever wrote the event go on through the
        # handler: its log lines carry them, and so do the events it writes.
        traceparent = headers.get(TRACEPARENT)
        correlation_id = headers.get("correlation_id")
        with (
            continued(
                f"{message.topic} process",
                traceparent.decode() if traceparent else None,
                attributes={"messaging.consumer.group.name": self.group},
            ),
            structlog.contextvars.bound_contextvars(
                correlation_id=correlation_id.decode() if correlation_id else None
            ),
        ):
            bound = self.log.bind(
                partition=_tp_text(tp), offset=message.offset, event_id=message.event_id or None
            )
            if await self._settle(message, missing, bound):
                await self._commit(tp, message.offset + 1, bound)
                self.lag()  # keeps the exported gauge current
            else:
                bound.info("message_left_uncommitted")

    def _message(self, record: Any) -> tuple[Message, MissingEventIdError | None]:
        headers = tuple((str(k), bytes(v)) for k, v in (record.headers or ()))
        message = Message(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=headers,
            timestamp_ms=record.timestamp,
            event_id="",
        )
        event_id = event_id_from_headers(headers)
        if event_id is None and self.event_id_of is not None:
            try:
                event_id = self.event_id_of(message) or None
            except Exception as exc:
                return message, MissingEventIdError(f"no event_id header; fallback: {exc!r}")
        if event_id is None:
            return message, MissingEventIdError("no event_id header")
        return dataclasses.replace(message, event_id=event_id), None

    async def _settle(
        self, message: Message, missing: MissingEventIdError | None, bound: Any
    ) -> bool:
        """Apply, skip, park or dead-letter the message; False if it was left instead."""
        tp = TopicPartition(message.topic, message.partition)
        tally = FailureTally()
        while True:
            try:
                if missing is not None:
                    raise missing
                outcome = await self._apply(message)
            except Exception as exc:
                delay = self.retry.after_failure(exc, tally)
                if delay is None:
                    return await self._dead_letter(message, exc, tally, bound)
                bound.warning(
                    "message_failed",
                    error=repr(exc),
                    attempt=tally.attempts,
                    retry_in=round(delay, 3),
                )
                if not await self._pause(tp, delay):
                    return False
                continue
            if outcome is _Outcome.APPLIED:
                self.counts.applied += 1
                await self.on_applied(message)
                return True
            if outcome is _Outcome.DUPLICATE:
                self.counts.duplicates += 1
                bound.info("message_duplicate")
                return True
            if outcome == message.event_id:
                # Dead-lettered before, but its offset commit was lost.
                self.counts.duplicates += 1
                bound.info("message_already_dead_lettered")
                return True
            return await self._park(message, outcome, bound)

    async def _apply(self, message: Message) -> _Outcome | str:
        """Run the handler in a transaction with the inbox claim; or return the event id
        the message's key is blocked behind."""
        key = message.key_text if self.block_keys else None
        async with self.pool.acquire() as conn, conn.transaction():
            claim = await inbox.claim(conn, self.group, message.event_id, key)
            if claim.blocked_by is not None:
                return claim.blocked_by
            if not claim.claimed:
                return _Outcome.DUPLICATE
            await self.handler(conn, message)
        return _Outcome.APPLIED

    async def _dead_letter(
        self, message: Message, error: BaseException, tally: FailureTally, bound: Any
    ) -> bool:
        headers = dead_letter_headers(
            message, group=self.group, error=error, attempts=tally.attempts
        )
        topic = self._dlq_topic_for(message.topic)
        if not await self._keep_trying(
            message, "dead_letter", bound, lambda: self._publish(topic, message, headers)
        ):
            return False
        key = message.key_text
        if self.block_keys and key is not None:
            reason = f"{type(error).__name__}: {error}"[:500]

            async def block() -> None:
                async with self.pool.acquire() as conn:
                    await inbox.block(
                        conn,
                        self.group,
                        key,
                        event_id=message.event_id or message.where,
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        reason=reason,
                    )

            if not await self._keep_trying(message, "block_key", bound, block):
                return False
        self.counts.dead_lettered += 1
        DEAD_LETTERED.labels(self.group, message.topic).inc()
        bound.error(
            "message_dead_lettered",
            dlq_topic=topic,
            error=repr(error),
            attempts=tally.attempts,
            key=key,
        )
        return True

    async def _park(self, message: Message, behind: str, bound: Any) -> bool:
        headers = held_back_headers(message, group=self.group, behind=behind)
        topic = self._dlq_topic_for(message.topic)
        key = message.key_text
        assert key is not None

        async def count() -> None:
            async with self.pool.acquire() as conn:
                await inbox.note_held_back(conn, self.group, key)

        if not (
            await self._keep_trying(
                message, "park", bound, lambda: self._publish(topic, message, headers)
            )
            and await self._keep_trying(message, "count_held_back", bound, count)
        ):
            return False
        self.counts.held_back += 1
        bound.warning("message_held_back", dlq_topic=topic, behind=behind, key=key)
        return True

    async def _keep_trying(
        self, message: Message, step: str, bound: Any, action: Callable[[], Awaitable[None]]
    ) -> bool:
        """Infrastructure steps (publish, bookkeeping) retry until done: no message is
        at fault when the broker or database is away."""
        tp = TopicPartition(message.topic, message.partition)
        tries = 0
        while True:
            try:
                await action()
                return True
            except Exception as exc:
                tries += 1
                delay = self.retry.delay(tries)
                bound.warning(
                    "step_failed",
                    step=step,
                    error=repr(exc),
                    attempt=tries,
                    retry_in=round(delay, 3),
                )
                if not await self._pause(tp, delay):
                    return False

    async def _publish(
        self, topic: str, message: Message, headers: list[tuple[str, bytes]]
    ) -> None:
        await self._producer.send_and_wait(
            topic, key=message.key, value=message.value, headers=headers
        )

    async def _commit(self, tp: TopicPartition, offset: int, bound: Any) -> None:
        try:
            await self._consumer.commit({tp: offset})
        except KafkaError as exc:
            # The partition has moved on (rebalance) or the broker refused: the next
            # owner gets the message again and the inbox skips it.
            bound.warning("offset_commit_failed", error=repr(exc))
        else:
            self._committed[tp] = offset

    def _dlq_topic_for(self, topic: str) -> str:
        return self.dlq_topic or f"{topic}.dlq"

    def _dlq_topics(self) -> list[str]:
        return [self.dlq_topic] if self.dlq_topic else [f"{t}.dlq" for t in self.topics]
