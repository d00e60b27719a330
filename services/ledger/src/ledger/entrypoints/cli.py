"""The `loyalty` command line: programs, migrations, projections, the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from loyalty_common.db import connect, create_pool
from loyalty_common.embedded import resolve_database_url
from loyalty_common.migrations import upgrade

from ledger.adapters import projections
from ledger.config import LedgerSettings
from ledger.service_layer.auth import SCOPES, create_key
from ledger.service_layer.errors import AsOfInFutureError
from ledger.service_layer.ledger import Ledger
from ledger.service_layer.program_document import ProgramDocument
from ledger.service_layer.programs import create_program

app = typer.Typer(help="Operate the loyalty ledger.", no_args_is_help=True)
db_app = typer.Typer(help="The ledger's database.", no_args_is_help=True)
program_app = typer.Typer(help="Loyalty programs and their API keys.", no_args_is_help=True)
projections_app = typer.Typer(help="Read models built from the events.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(program_app, name="program")
app.add_typer(projections_app, name="projections")
replay_app = typer.Typer(help="Replay events: to Kafka, into read models.", no_args_is_help=True)
events_app = typer.Typer(help="The ledger's events on Kafka.", no_args_is_help=True)
app.add_typer(replay_app, name="replay")
app.add_typer(events_app, name="events")
service_key_app = typer.Typer(
    help="Keys for other services, acting for any program.", no_args_is_help=True
)
app.add_typer(service_key_app, name="service-key")

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _dsn(settings: LedgerSettings) -> str:
    return resolve_database_url(settings.database_url, settings.data_dir, "loyalty")


def migrate(dsn: str) -> None:
    upgrade(MIGRATIONS, dsn)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations."""
    migrate(_dsn(LedgerSettings()))
    typer.echo("database is at the latest migration", err=True)


@program_app.command("create")
def program_create(name: Annotated[str, typer.Argument(help="The program's name")]) -> None:
    """Create a program; prints its id and API keys as JSON (keys are shown only once)."""
    if not name.strip():
        raise typer.BadParameter("must not be blank", param_hint="NAME")
    dsn = _dsn(LedgerSettings())
    migrate(dsn)

    async def run() -> dict[str, Any]:
        conn = await connect(dsn)
        try:
            created = await create_program(conn, name.strip())
        finally:
            await conn.close()
        return {"program_id": str(created.program_id), "api_keys": created.api_keys}

    typer.echo(json.dumps(asyncio.run(run()), indent=2))


@program_app.command("ensure-demo")
def program_ensure_demo(
    state_file: Annotated[Path, typer.Option(help="Where the demo program's keys are kept")],
) -> None:
    """Create the demo program once; later calls print the kept keys."""
    dsn = _dsn(LedgerSettings())
    migrate(dsn)

    async def run() -> dict[str, Any]:
        conn = await connect(dsn)
        try:
            if state_file.exists():
                kept = json.loads(state_file.read_text())
                if await conn.fetchval(
                    "SELECT 1 FROM programs WHERE program_id = $1", UUID(kept["program_id"])
                ):
                    return dict(kept)
            created = await create_program(conn, "Demo Club")
        finally:
            await conn.close()
        demo = {"program_id": str(created.program_id), "api_keys": created.api_keys}
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(demo, indent=2))
        state_file.chmod(0o600)
        return demo

    typer.echo(json.dumps(asyncio.run(run()), indent=2))


def _rebuild_projections() -> None:
    from rich.progress import Progress

    dsn = _dsn(LedgerSettings())
    migrate(dsn)

    async def run() -> None:
        conn, writer = await connect(dsn), await connect(dsn)
        try:
            configs = {
                r["program_id"]: ProgramDocument.model_validate(r["config"]).to_domain()
                for r in await conn.fetch("SELECT program_id, config FROM programs")
            }
            total = await conn.fetchval(
                "SELECT count(*) FROM events WHERE stream_id NOT LIKE 'program-%'"
            )
            started = time.perf_counter()
            with Progress(transient=False) as bar:
                task = bar.add_task("folding events", total=total)
                report = await projections.rebuild(
                    conn, writer, configs, progress=lambda n: bar.advance(task, n)
                )
            seconds = time.perf_counter() - started
            typer.echo(
                f"rebuilt {report.members} members from {report.events} events in"
                f" {seconds:.1f}s ({report.events / max(seconds, 1e-9):.0f} events/s);"
                f" {report.caught_up} streams caught up; rows that differed from the old"
                f" read models: {report.differences}",
                err=True,
            )
        finally:
            await conn.close()
            await writer.close()

    asyncio.run(run())


@projections_app.command("rebuild")
def projections_rebuild() -> None:
    """Rebuild members, lots, transactions and cards from the events, beside the live
    tables, and swap them in; writers wait only for the swap."""
    _rebuild_projections()


@replay_app.command("projections")
def replay_projections() -> None:
    """The same as `loyalty projections rebuild`."""
    _rebuild_projections()


@app.command("clock")
def clock(as_of: Annotated[datetime | None, typer.Option(help="Default: now")] = None) -> None:
    """Run time-driven processing (activations, expiry, period ends) for every program."""

    settings = LedgerSettings()
    at = as_of or datetime.now(UTC)
    if at.tzinfo is None:
        raise typer.BadParameter(
            "give a time zone, e.g. 2026-01-01T00:00:00+00:00", param_hint="--as-of"
        )
    dsn = _dsn(settings)
    migrate(dsn)

    async def run() -> dict[str, Any]:
        pool = await create_pool(dsn)
        try:
            ledger = Ledger(pool, allow_future_as_of=settings.allow_future_as_of)
            return await ledger.run_clock(ledger.check_as_of(at))
        finally:
            await pool.close()

    try:
        result = asyncio.run(run())
    except AsOfInFutureError as exc:
        raise typer.BadParameter(
            "lies in the future (allowed only with LOYALTY_ENV=dev)", param_hint="--as-of"
        ) from exc
    typer.echo(json.dumps(result, indent=2))


def _run_beside(
    create: Callable[[LedgerSettings], Any],
    address: Callable[[LedgerSettings], tuple[str, int]],
) -> None:
    """Run a process that works beside the API (relay, follower) with its own small
    health and metrics server; the database defaults to the embedded one, migrated."""
    import os

    import uvicorn

    settings = LedgerSettings()
    if settings.database_url is None:
        os.environ["DATABASE_URL"] = _dsn(settings)
        settings = LedgerSettings()
    migrate(settings.database_url or "")
    host, port = address(settings)
    uvicorn.run(
        create(settings), host=host, port=port, log_level="warning", access_log=False, loop="uvloop"
    )


@app.command("relay")
def relay() -> None:
    """Publish the event store to Kafka (KAFKA_BOOTSTRAP_SERVERS, LEDGER_TOPIC, RELAY_PORT)."""
    from ledger.entrypoints.relay import create_relay_app

    _run_beside(create_relay_app, lambda s: (s.relay_host, s.relay_port))


@app.command("follow")
def follow() -> None:
    """Keep the rules service's tiers and bonus campaigns for earns to apply
    (KAFKA_BOOTSTRAP_SERVERS, TIERS_TOPIC, CAMPAIGNS_TOPIC, LEDGER_FOLLOW_PORT)."""
    from ledger.entrypoints.follow import create_follow_app

    _run_beside(create_follow_app, lambda s: (s.follow_host, s.follow_port))


@service_key_app.command("create")
def service_key_create(
    name: Annotated[str, typer.Argument(help="Who uses the key, e.g. rules")],
    scope: Annotated[
        list[str], typer.Option(help=f"A scope to grant (repeatable): {', '.join(SCOPES)}")
    ],
) -> None:
    """Create a service key: it acts for any program named in X-Loyalty-Program.

    Prints {"key_id", "key", "scopes"} as JSON; the key is shown only once."""
    unknown = sorted(set(scope) - set(SCOPES))
    if unknown:
        raise typer.BadParameter(
            f"unknown scope {', '.join(unknown)}; known: {', '.join(SCOPES)}", param_hint="--scope"
        )
    if not name.strip():
        raise typer.BadParameter("must not be blank", param_hint="NAME")
    dsn = _dsn(LedgerSettings())
    migrate(dsn)
    scopes = tuple(sorted(set(scope)))

    async def run() -> str:
        conn = await connect(dsn)
        try:
            return await create_key(conn, None, f"service:{name.strip()}", scopes)
        finally:
            await conn.close()

    key = asyncio.run(run())
    typer.echo(json.dumps({"key_id": key.split("_")[1], "key": key, "scopes": list(scopes)}))


def _bootstrap(settings: LedgerSettings) -> str:
    if not settings.kafka_bootstrap_servers:
        raise typer.BadParameter(
            "set KAFKA_BOOTSTRAP_SERVERS (make run prints it)", param_hint="KAFKA_BOOTSTRAP_SERVERS"
        )
    return settings.kafka_bootstrap_servers


@replay_app.command("publish")
def replay_publish(
    member: Annotated[UUID | None, typer.Option(help="Only this member's events")] = None,
    program: Annotated[UUID | None, typer.Option(help="Only this program's events")] = None,
    from_position: Annotated[int | None, typer.Option(min=1, help="First position")] = None,
    to_position: Annotated[int | None, typer.Option(min=1, help="Last position")] = None,
    since: Annotated[datetime | None, typer.Option(help="Recorded at or after (with zone)")] = None,
    until: Annotated[datetime | None, typer.Option(help="Recorded before (with zone)")] = None,
) -> None:
    """Republish stored events to the ledger topic with the replay flag set."""
    from rich.progress import Progress

    from ledger.adapters.replay import Selection, count, publish

    for name, value in (("--since", since), ("--until", until)):
        if value is not None and value.tzinfo is None:
            raise typer.BadParameter(
                "give a time zone, e.g. 2026-01-01T00:00:00+00:00", param_hint=name
            )
    settings = LedgerSettings()
    bootstrap = _bootstrap(settings)
    dsn = _dsn(settings)
    selection = Selection(
        program_id=program,
        member_id=member,
        from_position=from_position,
        to_position=to_position,
        since=since,
        until=until,
    )

    async def run() -> int:
        conn = await connect(dsn)
        try:
            total = await count(conn, selection)
            with Progress(transient=False) as bar:
                task = bar.add_task("republishing", total=total)
                started = time.perf_counter()
                sent = await publish(
                    conn,
                    selection,
                    bootstrap=bootstrap,
                    topic=settings.ledger_topic,
                    partitions=settings.kafka_partitions,
                    replication_factor=settings.kafka_replication_factor,
                    idempotence=settings.kafka_idempotence,
                    progress=lambda n: bar.advance(task, n),
                )
            seconds = time.perf_counter() - started
            typer.echo(
                f"republished {sent} events to {settings.ledger_topic} in {seconds:.1f}s"
                f" ({sent / max(seconds, 1e-9):.0f} events/s)",
                err=True,
            )
            return sent
        finally:
            await conn.close()

    asyncio.run(run())


@replay_app.command("consumer")
def replay_consumer(
    group: Annotated[str, typer.Argument(help="The consumer group to rebuild")],
    database_url: Annotated[
        str, typer.Option(envvar="CONSUMER_DATABASE_URL", help="The consuming service's database")
    ],
    topic: Annotated[str | None, typer.Option(help="Default: LEDGER_TOPIC")] = None,
    keep_offsets: Annotated[
        bool, typer.Option(help="Only clear the inbox; then rebuild with `loyalty replay publish`")
    ] = False,
) -> None:
    """Make a (stopped) consumer group apply every event again: clear its inbox and
    blocked keys and, unless --keep-offsets, rewind it to the start of the topic."""
    from loyalty_common.consumer.inbox import forget
    from loyalty_common.consumer.reset import rewind

    settings = LedgerSettings()
    target = topic or settings.ledger_topic
    bootstrap = None if keep_offsets else _bootstrap(settings)  # refuse before changing anything

    async def run() -> None:
        conn = await connect(database_url)
        try:
            inbox, blocked = await forget(conn, group)
        finally:
            await conn.close()
        typer.echo(f"{group}: forgot {inbox} processed events and {blocked} blocked keys", err=True)
        if bootstrap is not None:
            offsets = await rewind(bootstrap, group, target)
            typer.echo(f"{group}: rewound {target} to {offsets}", err=True)

    asyncio.run(run())


@events_app.command("tail")
def events_tail(
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message")] = False,
    member: Annotated[str | None, typer.Option(help="Only this member's events")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many")] = None,
) -> None:
    """Follow the ledger topic and print each event as one line of JSON."""
    from aiokafka import AIOKafkaConsumer
    from google.protobuf.json_format import MessageToDict

    from ledger.adapters.protobuf import decode

    settings = LedgerSettings()
    bootstrap = _bootstrap(settings)

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            settings.ledger_topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
        )
        await consumer.start()
        printed = 0
        try:
            async for message in consumer:
                if member is not None and message.key != member.encode():
                    continue
                envelope = MessageToDict(decode(message.value), preserving_proto_field_name=True)
                typer.echo(json.dumps(envelope, ensure_ascii=False))
                printed += 1
                if count is not None and printed >= count:
                    break
        finally:
            await consumer.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@app.command("serve")
def serve() -> None:
    """Run the ledger's HTTP API (LEDGER_HOST, LEDGER_PORT, LEDGER_WORKERS)."""
    import os

    import uvicorn

    from ledger.entrypoints.workers import APP, UVICORN, serve_workers

    settings = LedgerSettings()
    if settings.database_url is None:
        # Resolve the embedded server here, so that this process holds it for its lifetime;
        # the workers find it through the environment.
        os.environ["DATABASE_URL"] = _dsn(settings)
    migrate(os.environ.get("DATABASE_URL") or settings.database_url or "")
    if settings.workers == 1:
        uvicorn.run(APP, host=settings.host, port=settings.port, **UVICORN)
        return
    with contextlib.ExitStack() as stack:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # /metrics, answered by any one worker, sums what all of them counted.
            import tempfile

            metrics = stack.enter_context(tempfile.TemporaryDirectory(prefix="ledger-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
        code = serve_workers(settings.host, settings.port, settings.workers)
    raise typer.Exit(code)


if __name__ == "__main__":
    sys.exit(app())
