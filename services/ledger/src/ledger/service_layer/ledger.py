"""Use cases of the ledger: member commands and queries over the event store.

Every member command runs as: load (one round trip), decide in the pure domain, save
(one round trip, guarded by the stream version). A lost race is retried inside a
transaction that locks the member row, so hot members converge instead of spinning.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from loyalty_common.telemetry import current_traceparent
from prometheus_client import Counter as Metric
from prometheus_client import Histogram
from uuid_utils import uuid4, uuid7

from ledger.adapters import repository
from ledger.adapters.codec import coupon_from_row, profile_of
from ledger.adapters.repository import EventMeta, IdempotencyRecord, Loaded
from ledger.domain.account import Balance, Coupon, MemberAccount, Purchase
from ledger.domain.benefits import BonusCampaign, earn_bonuses
from ledger.domain.errors import CardAlreadyLinkedError, CardNotLinkedError
from ledger.domain.events import (
    EarnReversed,
    Event,
    MemberEnrolled,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
)
from ledger.domain.history import historic_balance
from ledger.domain.program import ProgramConfig
from ledger.service_layer.batches import Batches
from ledger.service_layer.errors import (
    AsOfInFutureError,
    ContentionError,
    DuplicateOrderError,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    InvalidCursorError,
    KnownAtInFutureError,
    MemberExistsError,
    NotFoundError,
)
from ledger.service_layer.program_document import ProgramDocument

_ATTEMPTS = 5
_CLOCK_CONCURRENCY = 4
_FUTURE_TOLERANCE = timedelta(seconds=5)

Outcome = tuple[int, dict[str, Any]]
# Coupon codes: no 0/O, 1/I/L or U, so that they survive being read out at a till.
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
Decide = Callable[[MemberAccount, ProgramConfig, Loaded, datetime], dict[str, Any]]
# A command's answer and the events it wrote, each with its member id.
Done = tuple[Outcome, list[tuple[str, Event]]]


@dataclass(frozen=True)
class _Command:
    ctx: RequestContext
    decide: Decide
    status: int
    enrol: Callable[[Loaded, datetime], MemberAccount] | None
    load: dict[str, Any]
    traceparent: str | None  # of the request, read in its own context


def _member_key(command: _Command) -> Any:
    """Commands on one member go in different batches (the second would only lose)."""
    load = command.load
    for name in ("member_id", "card_token", "transaction_id", "coupon_code"):
        if load.get(name) is not None:
            return name, load[name]
    return None


@dataclass(frozen=True)
class _Step:
    outcome: Outcome
    save: repository.Statement | None = None
    member_id: str = ""
    written: list[tuple[str, Event]] = field(default_factory=list)
    refresh: tuple[UUID, datetime] | None = None  # a recomputed next_period_end to store


@dataclass(frozen=True)
class RequestContext:
    program_id: UUID
    actor: str
    correlation_id: str
    idempotency_key: str | None = None
    request_hash: bytes | None = None
    reason: str | None = None
    causation_id: str | None = None


log = structlog.get_logger("ledger")
EARNS = Metric("loyalty_earns_total", "Earn transactions written", ["program_id"])
REDEMPTIONS = Metric("loyalty_redemptions_total", "Redemptions written", ["program_id"])
POINTS = Metric("loyalty_points_total", "Points earned and redeemed", ["program_id", "direction"])
BATCH = Histogram(
    "loyalty_write_batch_commands",
    "Member commands per batch of first tries (loads in one round trip, saves in one more)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
ROLLBACKS = Metric(
    "loyalty_write_batch_rollbacks",
    "Batches of saves rolled back by one command's error; their commands retried alone",
)


@functools.cache
def _points_metrics(count: Metric, program: str, direction: str) -> tuple[Any, Any]:
    """A program's labelled metrics (``labels`` validates and looks up on every call)."""
    return count.labels(program), POINTS.labels(program, direction)


def _record(program_id: UUID, member_id: str, event: Event) -> None:
    """Metrics and log line of points a command moved (once it is committed)."""
    if isinstance(event, PointsEarned):
        count, direction = EARNS, "earned"
    elif isinstance(event, PointsRedeemed):
        count, direction = REDEMPTIONS, "redeemed"
    else:
        return
    program = str(program_id)
    moves, points = _points_metrics(count, program, direction)
    moves.inc()
    points.inc(event.points)
    log.info(
        f"points_{direction}",
        program_id=program,
        member_id=member_id,
        transaction_id=event.transaction_id,
        points=event.points,
    )


def _balance_summary(account: MemberAccount) -> dict[str, int]:
    return {
        "available": account.available,
        "pending": account.pending,
        "debt": account.debt,
        "lifetime_earned": account.lifetime_earned,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class Ledger:
    def __init__(self, pool: asyncpg.Pool, *, allow_future_as_of: bool) -> None:
        self.pool = pool
        self.allow_future_as_of = allow_future_as_of
        # Programs' configurations by version (a version never changes), and the latest
        # version seen of each program, which loads then do not send again.
        self._configs: dict[tuple[UUID, int], ProgramConfig] = {}
        self._config_versions: dict[UUID, int] = {}
        self._in_flight: set[tuple[UUID, str]] = set()
        self._batches: Batches[_Command, Done | None] = Batches(self._run_batch, key=_member_key)

    def _config(self, program_id: UUID, loaded: Loaded) -> ProgramConfig:
        key = (program_id, loaded.config_version)
        config = self._configs.get(key)
        if config is None:
            assert loaded.config is not None  # sent unless this version was known
            config = ProgramDocument.model_validate(loaded.config).to_domain()
            self._configs[key] = config
            known = self._config_versions.get(program_id, 0)
            self._config_versions[program_id] = max(known, loaded.config_version)
        return config

    def check_as_of(self, as_of: datetime | None) -> datetime:
        now = datetime.now(UTC)
        if as_of is None:
            return now
        if as_of > now + _FUTURE_TOLERANCE and not self.allow_future_as_of:
            raise AsOfInFutureError("as_of lies in the future", field="as_of")
        return as_of

    # -- the command runner -------------------------------------------------------------

    async def _run(
        self,
        ctx: RequestContext,
        decide: Decide,
        *,
        status: int = 201,
        enrol: Callable[[Loaded, datetime], MemberAccount] | None = None,
        **load: Any,
    ) -> Outcome:
        flight = (ctx.program_id, ctx.idempotency_key) if ctx.idempotency_key else None
        if flight is not None:
            # A twin still in flight in this process; twins in other processes meet at
            # the idempotency key's primary key and get the first response.
            if flight in self._in_flight:
                raise IdempotencyInProgressError(
                    "a request with this Idempotency-Key is still being processed"
                )
            self._in_flight.add(flight)
        command = _Command(ctx, decide, status, enrol, load, current_traceparent())
        try:
            for attempt in range(_ATTEMPTS):
                try:
                    if attempt == 0:
                        # Optimistic, in a batch with whatever other commands arrived
                        # meanwhile; a lost race retries alone, under the member's lock.
                        done = await self._batches.submit(command)
                    else:
                        done = await self._locked_attempt(command)
                except asyncpg.UniqueViolationError as exc:
                    self._raise_for_constraint(exc)
                    continue
                except repository.StaleTransactionError:
                    continue
                if done is not None:
                    outcome, written = done
                    for member_id, event in written:
                        _record(ctx.program_id, member_id, event)
                    return outcome
            raise ContentionError("the member is being changed by many requests; retry")
        finally:
            if flight is not None:
                self._in_flight.discard(flight)

    @staticmethod
    def _raise_for_constraint(exc: asyncpg.UniqueViolationError) -> None:
        constraint = exc.constraint_name
        if constraint == "transactions_one_earn_per_order":
            raise DuplicateOrderError("this order has already earned points for the member")
        if constraint == "cards_pkey":
            raise CardAlreadyLinkedError("the card is linked to another member")
        # Otherwise a twin won: the retry loads its idempotency record (or, for an
        # enrolment, finds the external_id taken) and answers accordingly.
        # (A coupon code taken by another coupon is retried with a fresh code.)
        if constraint not in (
            "coupons_code_unique",
            "idempotency_keys_pkey",
            "members_pkey",
            "members_program_id_external_id_key",
        ):
            raise exc

    async def _locked_attempt(self, command: _Command) -> Done | None:
        """One try of a command in a transaction of its own, holding the member's row
        lock from the load on; None if it still lost a race."""
        ctx = command.ctx
        async with self.pool.acquire() as conn, conn.transaction():
            loaded = await repository.load_member(
                conn,
                ctx.program_id,
                idempotency_key=ctx.idempotency_key,
                for_update=True,
                known_config_version=self._config_versions.get(ctx.program_id),
                **command.load,
            )
            if loaded is None:
                raise NotFoundError("program_not_found", "the program does not exist")
            step = self._step(command, loaded)
            if step.save is None:
                if step.refresh is not None:
                    await repository.refresh_next_period_end(conn, *step.refresh)
                return step.outcome, []
            sql, args = step.save
            if await conn.fetchval(sql, *args) != 1:
                return None
            return step.outcome, step.written

    async def _run_batch(self, commands: list[_Command]) -> list[Done | Exception | None]:
        """The first, optimistic try of several commands: their loads in one round trip,
        their saves in one more (one transaction). Each command's result, None if it
        lost a race, or the exception it raised."""
        BATCH.observe(len(commands))
        results: list[Done | Exception | None] = [None] * len(commands)
        async with self.pool.acquire() as conn:
            try:
                loads = await repository.load_members(
                    conn,
                    [
                        repository.load_statement(
                            c.ctx.program_id,
                            idempotency_key=c.ctx.idempotency_key,
                            known_config_version=self._config_versions.get(c.ctx.program_id),
                            **c.load,
                        )
                        for c in commands
                    ],
                )
            except asyncpg.PostgresError:
                if len(commands) == 1:
                    raise
                loads = None
            if loads is None:  # some command's load failed, or its program is unknown
                return results  # each retries alone
            saving: list[tuple[int, _Step, repository.Statement]] = []
            for index, (command, loaded) in enumerate(zip(commands, loads, strict=True)):
                try:
                    step = self._step(command, loaded)
                except Exception as exc:  # the command's own answer (an error response)
                    results[index] = exc
                    continue
                if step.save is None:
                    if step.refresh is not None:
                        await repository.refresh_next_period_end(conn, *step.refresh)
                    results[index] = (step.outcome, [])
                else:
                    saving.append((index, step, step.save))
            # One lock order for all batches, so that two of them rarely deadlock.
            saving.sort(key=lambda item: item[1].member_id)
            saved = await repository.save_members(conn, [save for _, _, save in saving])
        ROLLBACKS.inc(len({id(o) for o in saved if isinstance(o, Exception)}))
        for (index, step, _), outcome in zip(saving, saved, strict=True):
            if outcome is True:
                results[index] = (step.outcome, step.written)
            elif isinstance(outcome, asyncpg.UniqueViolationError) and saved.count(outcome) == 1:
                results[index] = outcome  # alone in its statement: the constraint is its own
            # else None: it lost a race, or shared a rolled-back batch; it retries alone.
        return results

    def _step(self, command: _Command, loaded: Loaded | None) -> _Step:
        """What a command decides on what was loaded: its answer, and what to write."""
        ctx, load = command.ctx, command.load
        if loaded is None:
            raise NotFoundError("program_not_found", "the program does not exist")
        if ctx.idempotency_key is not None and loaded.idempotency is not None:
            stored = loaded.idempotency
            if ctx.request_hash is not None and stored["hash"] == ctx.request_hash.hex():
                return _Step((stored["status"], stored["response"]))
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was used with a different request"
            )
        config = self._config(ctx.program_id, loaded)
        now = datetime.now(UTC)
        if command.enrol is not None:
            account = command.enrol(loaded, now)
        elif loaded.account is None:
            if load.get("coupon_code") is not None:
                raise NotFoundError("coupon_not_found", "no such coupon in this program")
            if load.get("transaction_id") is not None:
                raise NotFoundError("transaction_not_found", "no such transaction in this program")
            raise NotFoundError("member_not_found", "no such member in this program")
        else:
            account = loaded.account
        if load.get("order_id") and loaded.order_seen:
            raise DuplicateOrderError("this order has already earned points for the member")
        outcome = command.status, command.decide(account, config, loaded, now)
        next_end = account.next_period_end(config)
        if not account.new_events:
            if loaded.next_period_end is not None and loaded.next_period_end != next_end:
                return _Step(outcome, refresh=(UUID(account.member_id), next_end))
            return _Step(outcome)
        record = None
        if ctx.idempotency_key is not None and ctx.request_hash is not None:
            record = IdempotencyRecord(ctx.idempotency_key, ctx.request_hash, *outcome)
        meta = EventMeta(
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
            recorded_at=now,
            reason=ctx.reason,
            causation_id=ctx.causation_id,
            trace_context=command.traceparent,
        )
        return _Step(
            outcome,
            save=repository.save_statement(
                ctx.program_id, account, next_period_end=next_end, meta=meta, idempotency=record
            ),
            member_id=account.member_id,
            written=[(account.member_id, event) for event in account.new_events],
        )

    # -- member commands ----------------------------------------------------------------

    async def enrol(
        self, ctx: RequestContext, *, external_id: str, profile: dict[str, Any]
    ) -> Outcome:
        member_id = str(uuid4())

        def new_account(loaded: Loaded, now: datetime) -> MemberAccount:
            if loaded.external_owner is not None:
                raise MemberExistsError(
                    "a member with this external_id exists", member_id=loaded.external_owner
                )
            return MemberAccount.enrol(
                MemberEnrolled(
                    member_id=member_id, external_id=external_id, enrolled_at=now, **profile
                )
            )

        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            return self._member_view(account, [])

        return await self._run(
            ctx, decide, enrol=new_account, member_id=UUID(member_id), external_id=external_id
        )

    async def link_card(self, ctx: RequestContext, member_id: UUID, card_token: str) -> Outcome:
        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            if loaded.card_owner not in (None, account.member_id):
                raise CardAlreadyLinkedError(
                    "the card is linked to another member", field="card_token"
                )
            account.link_card(card_token)
            return {
                "member_id": account.member_id,
                "card_token": card_token,
                "cards": sorted(account.cards),
            }

        return await self._run(
            ctx, decide, member_id=member_id, load_cards=True, link_card_token=card_token
        )

    async def unlink_card(self, ctx: RequestContext, member_id: UUID, card_token: str) -> Outcome:
        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            if card_token not in account.cards:
                raise CardNotLinkedError("the card is not linked to this member")
            account.unlink_card(card_token)
            return {"member_id": account.member_id, "cards": sorted(account.cards)}

        return await self._run(ctx, decide, status=200, member_id=member_id, load_cards=True)

    async def change_consents(
        self, ctx: RequestContext, member_id: UUID, consents: dict[str, bool]
    ) -> Outcome:
        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            account.change_consents(consents, now=now, source=ctx.reason)
            return self._member_view(account, sorted(account.cards))

        return await self._run(ctx, decide, status=200, member_id=member_id, load_cards=True)

    async def change_profile(
        self, ctx: RequestContext, member_id: UUID, changes: dict[str, Any]
    ) -> Outcome:
        """Change profile fields (None: remove the value); records one
        MemberProfileChanged with what really changes, nothing if nothing does."""

        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            account.change_profile(changes, now=now)
            return self._member_view(account, sorted(account.cards))

        return await self._run(ctx, decide, status=200, member_id=member_id, load_cards=True)

    async def earn(
        self,
        ctx: RequestContext,
        purchase: Purchase,
        *,
        member_id: UUID | None = None,
        card_token: str | None = None,
    ) -> Outcome:
        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            bonuses = earn_bonuses(
                purchase, config.tiers, loaded.tier, [_campaign(c) for c in loaded.campaigns]
            )
            event = account.earn_purchase(
                purchase,
                config,
                transaction_id=str(uuid7()),
                lot_id=str(uuid7()),
                now=now,
                bonuses=bonuses,
            )
            return self._earn_view(account, event)

        return await self._run(
            ctx,
            decide,
            member_id=member_id,
            card_token=card_token,
            order_id=purchase.order_id,
            # A till's clock a little ahead of ours is now (as the earn takes it): the
            # tier and campaigns of now, not of a few minutes on.
            purchase_at=min(purchase.occurred_at, datetime.now(UTC)),
        )

    async def earn_bonus(
        self,
        ctx: RequestContext,
        *,
        points: int,
        qualifying: bool,
        occurred_at: datetime | None,
        member_id: UUID | None = None,
        card_token: str | None = None,
    ) -> Outcome:
        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            event = account.earn_bonus(
                points,
                ctx.reason or "bonus",
                config,
                qualifying=qualifying,
                transaction_id=str(uuid7()),
                lot_id=str(uuid7()),
                occurred_at=occurred_at or now,
                now=now,
            )
            return self._earn_view(account, event)

        return await self._run(ctx, decide, member_id=member_id, card_token=card_token)

    async def redeem(
        self,
        ctx: RequestContext,
        member_id: UUID,
        *,
        points: int,
        reward: str | None,
        order_id: str | None,
    ) -> Outcome:
        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            account.advance_to(now, config)
            event = account.redeem(
                points, transaction_id=str(uuid7()), now=now, reward=reward, order_id=order_id
            )
            return {
                "transaction_id": event.transaction_id,
                "member_id": account.member_id,
                "points": event.points,
                "allocations": [
                    {
                        "lot_id": a.lot_id,
                        "points": a.points,
                        "expires_at": _iso(account.lots[a.lot_id].expires_at),
                    }
                    for a in event.allocations
                ],
                "balance": _balance_summary(account),
            }

        return await self._run(ctx, decide, member_id=member_id, load_lots=True)

    async def issue_coupon(
        self, ctx: RequestContext, member_id: UUID, spec: dict[str, Any]
    ) -> Outcome:
        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            event = account.issue_coupon(
                coupon_id=str(uuid7()), code=new_coupon_code(), now=now, **spec
            )
            return _coupon_view(account.coupons[event.coupon_id], account.member_id)

        return await self._run(ctx, decide, member_id=member_id)

    async def redeem_coupon(
        self,
        ctx: RequestContext,
        code: str,
        *,
        order_id: str | None,
        order_amount: Decimal | None,
        currency: str | None,
    ) -> Outcome:
        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            coupon = next(c for c in account.coupons.values() if c.code == code)
            if coupon.points_cost:
                account.advance_to(now, config)
            account.redeem_coupon(
                coupon.coupon_id,
                now=now,
                transaction_id=str(uuid7()),
                order_id=order_id,
                order_amount=order_amount,
                currency=currency,
            )
            return {
                **_coupon_view(coupon, account.member_id),
                "balance": _balance_summary(account),
            }

        return await self._run(ctx, decide, status=200, coupon_code=code, load_lots=True)

    async def coupons(self, program_id: UUID, member_id: UUID) -> dict[str, Any]:
        await self._load(program_id, member_id)
        rows = await self.pool.fetch(
            "SELECT * FROM coupons WHERE member_id = $1 ORDER BY issued_at, coupon_id", member_id
        )
        return {
            "member_id": str(member_id),
            "coupons": [_coupon_view(coupon_from_row(dict(r)), str(member_id)) for r in rows],
        }

    async def adjust(self, ctx: RequestContext, member_id: UUID, *, points: int) -> Outcome:
        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            account.advance_to(now, config)
            event = account.adjust(
                points, config, transaction_id=str(uuid7()), lot_id=str(uuid7()), now=now
            )
            return {
                "transaction_id": event.transaction_id,
                "member_id": account.member_id,
                "points": event.points,
                "reason": ctx.reason,
                "balance": _balance_summary(account),
            }

        return await self._run(ctx, decide, member_id=member_id, load_lots=True)

    async def reverse(
        self,
        ctx: RequestContext,
        transaction_id: UUID,
        *,
        points: int | None,
        amount: Decimal | None,
    ) -> Outcome:
        def decide(
            account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
        ) -> dict[str, Any]:
            account.advance_to(now, config)
            start = len(account.new_events)
            event = account.reverse(
                str(transaction_id),
                config,
                transaction_id=str(uuid7()),
                now=now,
                points=points,
                amount=amount,
            )
            taken = sum(a.points for a in event.allocations)
            earn = isinstance(event, EarnReversed)
            body: dict[str, Any] = {
                "transaction_id": event.transaction_id,
                "original_transaction_id": str(transaction_id),
                "member_id": account.member_id,
                "kind": "earn_reversal" if earn else "redemption_reversal",
                "points": event.points,
                "points_taken": taken if earn else 0,
                "points_returned": 0 if earn else taken,
                "debt_recorded": getattr(event, "debt_recorded", 0),
                "forgiven": getattr(event, "forgiven", 0),
                # Points returned to lots past their expiry expire on return (ADR 0018).
                "points_expired": sum(
                    e.points for e in account.new_events[start:] if isinstance(e, PointsExpired)
                ),
                "balance": _balance_summary(account),
            }
            return body

        return await self._run(ctx, decide, transaction_id=transaction_id, load_lots=True)

    async def run_clock(
        self,
        as_of: datetime,
        program_id: UUID | None = None,
        *,
        actor: str = "clock",
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """All time-driven processing up to ``as_of``, member by member."""
        due = await self.pool.fetch(
            """SELECT m.member_id, m.program_id FROM members m
                WHERE ($2::uuid IS NULL OR m.program_id = $2) AND m.member_id IN (
                    SELECT member_id FROM lots WHERE pending AND available_at <= $1
                    UNION SELECT member_id FROM lots WHERE remaining > 0 AND expires_at <= $1
                    UNION SELECT member_id FROM members WHERE next_period_end <= $1)""",
            as_of,
            program_id,
        )
        counts: Counter[str] = Counter()
        gate = asyncio.Semaphore(_CLOCK_CONCURRENCY)
        correlation = correlation_id or str(uuid4())

        async def advance(member_id: UUID, member_program: UUID) -> None:
            def decide(
                account: MemberAccount, config: ProgramConfig, loaded: Loaded, now: datetime
            ) -> dict[str, Any]:
                for event in account.advance_to(as_of, config):
                    counts[type(event).__name__] += 1
                return {}

            ctx = RequestContext(
                program_id=member_program, actor=actor, correlation_id=correlation, reason="clock"
            )
            async with gate:
                await self._run(ctx, decide, member_id=member_id, load_lots=True, lots_until=as_of)

        await asyncio.gather(*(advance(r["member_id"], r["program_id"]) for r in due))
        return {"as_of": as_of.isoformat(), "members": len(due), "events": dict(counts)}

    # -- queries ------------------------------------------------------------------------

    async def _load(
        self, program_id: UUID, member_id: UUID, **load: Any
    ) -> tuple[MemberAccount, ProgramConfig]:
        async with self.pool.acquire() as conn:
            loaded = await repository.load_member(
                conn,
                program_id,
                member_id=member_id,
                known_config_version=self._config_versions.get(program_id),
                **load,
            )
        if loaded is None or loaded.account is None:
            raise NotFoundError("member_not_found", "no such member in this program")
        return loaded.account, self._config(program_id, loaded)

    async def member(self, program_id: UUID, member_id: UUID) -> dict[str, Any]:
        account, _ = await self._load(program_id, member_id, load_cards=True)
        return self._member_view(account, sorted(account.cards))

    async def find_members(self, program_id: UUID, key: str, value: str) -> dict[str, Any]:
        """The program's members whose ``key`` (external_id, card_token, email or
        phone) is ``value``; email compared case-insensitively."""
        async with self.pool.acquire() as conn:
            accounts = await repository.find_members(conn, program_id, key, value)
        return {"members": [self._member_view(a, sorted(a.cards)) for a in accounts]}

    async def balance(
        self,
        program_id: UUID,
        member_id: UUID,
        as_of: datetime | None,
        known_at: datetime | None = None,
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        at = self.check_as_of(as_of)
        if known_at is not None and known_at > now + _FUTURE_TOLERANCE:
            raise KnownAtInFutureError("known_at lies in the future", field="known_at")
        if at < now - _FUTURE_TOLERANCE or known_at is not None:
            balance = await self._historic_balance(program_id, member_id, at, known_at)
        else:
            account, config = await self._load(
                program_id, member_id, load_lots=True, lots_until=at + timedelta(days=91)
            )
            balance = account.advanced_balance(at, config)
        view = self._balance_view(str(member_id), at, balance)
        if known_at is not None:
            view["known_at"] = known_at.isoformat()
        return view

    async def _historic_balance(
        self, program_id: UUID, member_id: UUID, at: datetime, known_at: datetime | None
    ) -> Balance:
        """The balance as of ``at`` by the events recorded up to ``known_at`` (ADR 0018)."""
        _, config = await self._load(program_id, member_id)  # 404 for an unknown member
        async with self.pool.acquire() as conn:
            records = await repository.member_events(conn, member_id, known_at=known_at)
        if not records:
            raise NotFoundError("member_not_found", "the member was not enrolled by known_at")
        # A long history takes seconds to fold: in a thread, the event loop goes on
        # serving the worker's other requests meanwhile.
        return await asyncio.to_thread(
            lambda: historic_balance(repository.decode_stream(records), at, config)
        )

    async def member_events(
        self, program_id: UUID, member_id: UUID, *, after: int, limit: int
    ) -> dict[str, Any]:
        await self._load(program_id, member_id)
        async with self.pool.acquire() as conn:
            records = await repository.member_events(
                conn, member_id, after_version=after, limit=limit
            )
        events = [_event_view(r) for r in records]
        return {
            "events": events,
            "next_cursor": str(events[-1]["version"]) if len(events) == limit else None,
        }

    async def feed(self, program_id: UUID, *, cursor: str | None, limit: int) -> dict[str, Any]:
        """Events in a commit-safe order: by (transaction id, position), and only from
        transactions older than every transaction still running.

        Positions come from a sequence, so a transaction can commit a lower position
        after a higher one is visible; ordering by position alone would let a reader
        skip it. Every transaction that can still commit has an id at or above the
        snapshot's xmin, so nothing can appear behind the cursor.
        """
        after_xact, after_position = _parse_cursor(cursor)
        records = await self.pool.fetch(
            """SELECT position, event_id, stream_id, version, type, data, occurred_at,
                      recorded_at, actor, reason, correlation_id, causation_id,
                      xact_id::text AS xact
                 FROM events
                WHERE program_id = $1
                  AND (xact_id, position) > ($2::text::xid8, $3)
                  AND xact_id < pg_snapshot_xmin(pg_current_snapshot())
                ORDER BY xact_id, position LIMIT $4""",
            program_id,
            str(after_xact),
            after_position,
            limit,
        )
        events = [_event_view(r) for r in records]
        next_cursor = (
            f"{records[-1]['xact']}-{records[-1]['position']}" if records else cursor or "0-0"
        )
        return {"events": events, "next_cursor": next_cursor}

    async def transaction(self, program_id: UUID, transaction_id: UUID) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT * FROM transactions WHERE transaction_id = $1 AND program_id = $2",
            transaction_id,
            program_id,
        )
        if row is None:
            raise NotFoundError("transaction_not_found", "no such transaction in this program")
        return {
            "transaction_id": str(row["transaction_id"]),
            "member_id": str(row["member_id"]),
            "kind": row["kind"],
            "points": row["points"],
            "occurred_at": _iso(row["occurred_at"]),
            "order_id": row["order_id"],
            "amount": str(row["amount"]) if row["amount"] is not None else None,
            "currency": row["currency"],
            "reversed_points": row["reversed_points"],
            "reversed_amount": str(row["reversed_amount"]),
        }

    # -- views --------------------------------------------------------------------------

    @staticmethod
    def _member_view(account: MemberAccount, cards: list[str]) -> dict[str, Any]:
        return {
            "member_id": account.member_id,
            "external_id": account.external_id,
            "enrolled_at": _iso(account.enrolled_at),
            **profile_of(account),
            "cards": cards,
            "balance": _balance_summary(account),
        }

    @staticmethod
    def _earn_view(account: MemberAccount, event: Any) -> dict[str, Any]:
        return {
            "transaction_id": event.transaction_id,
            "member_id": account.member_id,
            "points": event.points,
            "qualifying_points": event.qualifying_points,
            "status": "pending" if event.available_at else "available",
            "available_at": _iso(event.available_at),
            "expires_at": _iso(event.expires_at),
            "debt_paid": event.debt_paid,
            "breakdown": [
                {"rule": b.rule, "points": b.points, "detail": b.detail} for b in event.breakdown
            ],
            "balance": _balance_summary(account),
        }

    @staticmethod
    def _balance_view(member_id: str, as_of: datetime, balance: Balance) -> dict[str, Any]:
        return {
            "member_id": member_id,
            "as_of": as_of.isoformat(),
            "available": balance.available,
            "pending": balance.pending,
            "debt": balance.debt,
            "lifetime_earned": balance.lifetime_earned,
            "qualifying_points": balance.qualifying_points,
            "qualification_period": {
                "start": _iso(balance.qualification_period_start),
                "end": _iso(balance.qualification_period_end),
            },
            "expiring": [{"date": d, "points": p} for d, p in balance.expiring],
        }


_CURSOR = re.compile(r"^([0-9]{1,20})-([0-9]{1,19})$")


def _parse_cursor(cursor: str | None) -> tuple[int, int]:
    if not cursor:
        return 0, 0
    match = _CURSOR.match(cursor)
    if match is None or int(match[1]) >= 2**64 or int(match[2]) >= 2**63:
        raise InvalidCursorError("not a cursor from this feed", field="cursor")
    return int(match[1]), int(match[2])


def _event_view(record: asyncpg.Record) -> dict[str, Any]:
    return {
        "position": record["position"],
        "event_id": str(record["event_id"]),
        "stream_id": record["stream_id"],
        "version": record["version"],
        "type": record["type"],
        "occurred_at": _iso(record["occurred_at"]),
        "recorded_at": _iso(record["recorded_at"]),
        "actor": record["actor"],
        "reason": record["reason"],
        "correlation_id": record["correlation_id"],
        "causation_id": record["causation_id"],
        "data": record["data"],
    }


def new_coupon_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))


def _campaign(row: dict[str, Any]) -> BonusCampaign:
    return BonusCampaign(
        name=row["name"],
        multiplier=Decimal(str(row["multiplier"])),
        channels=frozenset(row["channels"]),
        categories=frozenset(row["categories"]),
        store_ids=frozenset(row["store_ids"]),
        tiers=frozenset(row["tiers"]),
    )


def _coupon_view(coupon: Coupon, member_id: str) -> dict[str, Any]:
    return {
        "coupon_id": coupon.coupon_id,
        "member_id": member_id,
        "code": coupon.code,
        "kind": coupon.kind,
        "value": str(coupon.value),
        "currency": coupon.currency,
        "points_cost": coupon.points_cost,
        "valid_from": _iso(coupon.valid_from),
        "valid_until": _iso(coupon.valid_until),
        "issued_at": _iso(coupon.issued_at),
        "campaign_id": coupon.campaign_id,
        "status": "redeemed" if coupon.redeemed_at else "issued",
        "redeemed_at": _iso(coupon.redeemed_at),
        "order_id": coupon.order_id,
        "order_amount": str(coupon.order_amount) if coupon.order_amount is not None else None,
    }
