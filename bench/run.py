"""Run the jobyard benchmark suite against PgQueuer and Procrastinate; write results JSON.

Run it with the main .venv's python (`make bench` does): it drives every system through its own
CLI adapter in bench/systems/, each in its own virtualenv, and reads completions from the
database itself. See docs/benchmarks.md for what is measured and how.

    .venv/bin/python bench/run.py                       # the full suite (about 20 minutes)
    .venv/bin/python bench/run.py --quick               # 1 run each, small N (about 3 minutes)
    .venv/bin/python bench/run.py --systems jobyard,jobyard-sqlite --scenarios S1,S6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from systems.specs import BENCH, ROOT, SYSTEMS, System

RESULTS = BENCH / "results"
PGBENCH_DIR = BENCH / "pgbench"
ALL_SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6", "pgbench", "floor", "memory")
# Scenarios run once, by the orchestrator, for jobyard's schema (not once per system).
SUITE_SCENARIOS = ("pgbench", "floor", "memory")
# jobyard on SQLite runs these (S3 twice: producer in the worker's process, and in another).
SQLITE_SCENARIOS = ("S1", "S2", "S3", "S4")
MEMORY_LIMIT_MB = 150.0
LOG_PATTERN = re.compile(r"\b(ERROR|CRITICAL|WARNING|Traceback)\b")
# Known, harmless log lines of the peers that say nothing about the run.
LOG_IGNORE = ("App is instantiated in the main Python module",)


@dataclass(frozen=True)
class Sizes:
    runs: int
    drain_n: int  # S1, S4, S5, S6
    single_n: int  # S2
    latency_n: int  # S3
    latency_rate: float
    history_n: int  # S6
    memory_n: int
    pgbench_seconds: int
    pgbench_clients: tuple[int, ...]
    drain_timeout: float  # per run, seconds


FULL = Sizes(
    runs=3,
    drain_n=20_000,
    single_n=5_000,
    latency_n=1_000,
    latency_rate=100.0,
    history_n=1_000_000,
    memory_n=100_000,
    pgbench_seconds=10,
    pgbench_clients=(1, 2, 8),
    drain_timeout=300.0,
)
QUICK = Sizes(
    runs=1,
    drain_n=2_000,
    single_n=500,
    latency_n=200,
    latency_rate=100.0,
    history_n=100_000,
    memory_n=10_000,
    pgbench_seconds=3,
    pgbench_clients=(1, 8),
    drain_timeout=120.0,
)


class BenchError(Exception):
    """A run failed; the suite records it and goes on."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- databases --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pg:
    host: str
    port: int
    user: str

    def dsn(self, db: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{db}"

    def connect(self, db: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn(db), autocommit=True)

    def create(self, db: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{db}"')

    def drop(self, db: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


class Target:
    """One fresh database for one run: a PostgreSQL database or a SQLite file."""

    def __init__(self, ctx: Context, system: System, tag: str) -> None:
        self.ctx = ctx
        self.system = system
        self.floor = 0
        self._tmp: Path | None = None
        if system.backend == "postgres":
            self.db = f"bench_{tag}".lower().replace("-", "_")
            ctx.pg.create(self.db)
            self.dsn = ctx.pg.dsn(self.db)
            self._pg: psycopg.Connection[Any] | None = ctx.pg.connect(self.db)
            self._lite: sqlite3.Connection | None = None
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"jobyard-bench-{tag}-"))
            path = self._tmp / "jobyard.db"
            self.db = str(path)
            self.dsn = f"sqlite:///{path}"  # absolute path: sqlite:////tmp/...
            self._pg = None
            self._lite = None

    def scalar(self, sql: str) -> Any:
        rows = self.rows(sql)
        return rows[0][0] if rows else None

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        sql = sql.format(floor=self.floor)
        if self._pg is not None:
            return list(self._pg.execute(sql).fetchall())
        if self._lite is None:  # after the schema exists
            self._lite = sqlite3.connect(self.db, isolation_level=None, timeout=30)
        return list(self._lite.execute(sql).fetchall())

    def execute(self, sql: str) -> None:
        if self._pg is None:
            raise BenchError("SQL maintenance statements are for PostgreSQL targets")
        self._pg.execute(sql)

    def maintain(self) -> None:
        """Fresh statistics and a checkpoint before a measured phase, the same for every
        system (this server runs with autovacuum off, so nothing else would analyze)."""
        if self._pg is not None:
            self.execute("ANALYZE")
            self.execute("CHECKPOINT")

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self.ctx.pg.drop(self.db)
        if self._lite is not None:
            self._lite.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


# -- processes --------------------------------------------------------------------------------
class Context:
    def __init__(self, pg: Pg, sizes: Sizes, logs: Path, jobyard_src: Path) -> None:
        self.pg = pg
        self.sizes = sizes
        self.logs = logs
        self.jobyard_src = jobyard_src  # the src/ directory jobyard is imported from
        self.jobyard_ref = ""
        self.jobyard_commit = ""
        self._seq = 0

    def env(self, system: System) -> dict[str, str]:
        """The environment of a system's processes: jobyard's see `jobyard_src` first."""
        env = dict(os.environ)
        if system.python == SYSTEMS["jobyard"].python:
            env["PYTHONPATH"] = str(self.jobyard_src)
        return env

    def log_file(self, name: str) -> Path:
        self._seq += 1
        return self.logs / f"{self._seq:04d}-{name}.log"

    @contextlib.contextmanager
    def target(self, system: System, tag: str) -> Iterator[Target]:
        target = Target(self, system, tag)
        try:
            yield target
        finally:
            target.close()


def log_issues(path: Path) -> list[str]:
    """Warning and error lines a process logged (at most 10, de-duplicated)."""
    if not path.exists():
        return []
    seen: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if LOG_PATTERN.search(line) and not any(s in line for s in LOG_IGNORE):
            line = line.strip()[:300]
            if line not in seen:
                seen.append(line)
            if len(seen) >= 10:
                break
    return seen


def call(
    ctx: Context, system: System, command: str, timeout: float = 600, **opts: Any
) -> dict[str, Any]:
    """Run an adapter command to completion and return its JSON."""
    args = [str(system.python), str(system.adapter), command]
    for key, value in opts.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    logfile = ctx.log_file(f"{system.name}-{command}")
    with logfile.open("w") as err:
        try:
            proc = subprocess.run(
                args,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                timeout=timeout,
                check=False,
                env=ctx.env(system),
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{system.name} {command} timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-5:]
        raise BenchError(f"{system.name} {command} exited {proc.returncode}: {' | '.join(tail)}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError(f"{system.name} {command} printed no result")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Worker:
    """One worker process of a system, started and stopped like a deployment would."""

    def __init__(
        self, ctx: Context, system: System, dsn: str, concurrency: int, limit: int, name: str
    ) -> None:
        self.system = system
        self.out = ctx.logs / f"{name}.json"
        self.logfile = ctx.log_file(name)
        self._err = self.logfile.open("w")
        self.proc = subprocess.Popen(
            [
                str(system.python),
                str(system.adapter),
                "worker",
                "--dsn",
                dsn,
                "--concurrency",
                str(concurrency),
                "--limit",
                str(limit),
                "--out",
                str(self.out),
            ],
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env=ctx.env(system),
        )
        self.t_start = 0.0

    def wait_ready(self, timeout: float = 60.0) -> float:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.system.name} worker exited before it was ready")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("READY "):
                    self.t_start = float(line.split()[1])
                    return self.t_start
        raise BenchError(f"{self.system.name} worker not ready after {timeout:.0f}s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def vmhwm_mb(self) -> float | None:
        """Peak RSS so far, from the kernel's own record of the process."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) / 1024 if match else None

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """SIGTERM (a graceful stop), then the worker's own report."""
        killed = False
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                killed = True
        self._err.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        report: dict[str, Any] = {}
        if self.out.exists():
            report = json.loads(self.out.read_text())
        report["exit_code"] = self.proc.returncode
        report["killed_after_timeout"] = killed
        report["log_issues"] = log_issues(self.logfile)
        return report

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._err.close()


# -- measurements -----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def wait_drained(
    target: Target, workers: Sequence[Worker], n: int, timeout: float, stall: float = 30.0
) -> None:
    """Poll the system's own tables from this separate connection until no measured job is
    left pending or running; fail on a dead worker, a stall or the timeout."""
    system = target.system
    start = time.monotonic()
    last_progress, last_done = start, -1
    next_count = start
    while True:
        if not target.scalar(system.remaining_sql):
            return
        now = time.monotonic()
        for w in workers:
            if not w.alive():
                raise BenchError(f"a {system.name} worker died (exit {w.proc.returncode})")
        if now >= next_count:
            done = int(target.scalar(system.done_sql) or 0)
            if done != last_done:
                last_done, last_progress = done, now
            elif now - last_progress > stall:
                raise BenchError(f"{system.name} stalled at {done}/{n} completions")
            next_count = now + 2.0
        if now - start > timeout:
            raise BenchError(f"{system.name} did not drain {n} jobs in {timeout:.0f}s")
        time.sleep(0.05)


def seed_history(target: Target, n: int) -> float:
    t0 = time.perf_counter()
    for sql in target.system.seed_sql:
        target.execute(sql.format(n=n))
    target.execute("VACUUM ANALYZE")
    return time.perf_counter() - t0


def run_drain(
    ctx: Context,
    system: System,
    scenario: str,
    run: int,
    *,
    n: int,
    workers: Sequence[tuple[int, int]],  # (concurrency, limit) per worker process
    history: int = 0,
    explain: bool = False,
    memory: bool = False,
) -> dict[str, Any]:
    record: dict[str, Any] = {"n": n, "workers": [list(w) for w in workers], "history": history}
    with ctx.target(system, f"{system.name}_{scenario}_{run}") as target:
        call(ctx, system, "setup", dsn=target.dsn)
        if history:
            record["seed_seconds"] = seed_history(target, history)
            target.floor = int(target.scalar(system.floor_sql) or 0)
        enq = call(ctx, system, "enqueue-bulk", dsn=target.dsn, n=n)
        record["enqueue_seconds"] = enq["seconds"]
        record["enqueue_per_s"] = n / enq["seconds"]
        enqueued = int(target.scalar(system.enqueued_sql) or 0)
        if enqueued != n:
            raise BenchError(
                f"{system.name}: {enqueued} jobs in the database after enqueue, not {n}"
            )
        target.maintain()
        if explain and system.backend == "postgres":
            concurrency = workers[0][0]
            record["claim_explain"] = call(
                ctx, system, "explain-claim", dsn=target.dsn, concurrency=concurrency, repeat=5
            )
        procs: list[Worker] = []
        try:
            for k, (concurrency, limit) in enumerate(workers):
                name = f"{system.name}-{scenario}-r{run}-w{k}"
                procs.append(Worker(ctx, system, target.dsn, concurrency, limit, name))
            t_start = min(w.wait_ready() for w in procs)
            wait_drained(target, procs, n, ctx.sizes.drain_timeout)
            last_done = float(target.scalar(system.last_done_sql))
            if memory:
                record["vmhwm_mb"] = max(w.vmhwm_mb() or 0.0 for w in procs)
            reports = [w.stop() for w in procs]
        finally:
            for w in procs:
                w.kill()
        record.update(_verify(target, system, n, reports))
        record["drain_seconds"] = last_done - t_start
        record["jobs_per_s"] = n / record["drain_seconds"]
        if memory:
            record["peak_rss_mb"] = max(r.get("peak_rss_mb", 0.0) for r in reports)
            record["rss_ready_mb"] = max(r.get("rss_ready_mb", 0.0) for r in reports)
            record["recorded_mb"] = sum(r.get("recorded_mb", 0.0) for r in reports)
    return record


def _verify(
    target: Target, system: System, n: int, reports: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Every job must be completed in the database, and run by some worker."""
    done = int(target.scalar(system.done_sql) or 0)
    indexes = [i for r in reports for i in r.get("indexes", [])]
    unique = len(set(indexes))
    issues = [line for r in reports for line in r.get("log_issues", [])]
    out: dict[str, Any] = {
        "completed_in_db": done,
        "executed": len(indexes),
        "duplicates": len(indexes) - unique,
        "log_issues": issues,
        "worker_exit_codes": [r.get("exit_code") for r in reports],
    }
    if done != n or unique != n:
        states = target.rows(system.status_sql)
        out["states"] = {str(s): int(c) for s, c in states}
        raise BenchError(
            f"{system.name}: {done}/{n} completed in the database, {unique} distinct jobs run "
            f"(states {out['states']})"
        )
    if any(r.get("killed_after_timeout") for r in reports):
        out["note"] = "a worker did not stop within 60s of SIGTERM and was killed"
    return out


def run_single(ctx: Context, system: System, scenario: str, run: int, *, n: int) -> dict[str, Any]:
    with ctx.target(system, f"{system.name}_{scenario}_{run}") as target:
        call(ctx, system, "setup", dsn=target.dsn)
        result = call(ctx, system, "enqueue-single", dsn=target.dsn, n=n)
        in_db = int(target.scalar(system.enqueued_sql) or 0)
        if in_db != n:
            raise BenchError(f"{system.name}: {in_db} jobs in the database, not {n}")
    return {
        "n": n,
        "seconds": result["seconds"],
        "jobs_per_s": n / result["seconds"],
        "in_db": in_db,
    }


def _latencies(
    sent: Sequence[float], indexes: Sequence[int], starts: Sequence[float]
) -> dict[str, Any]:
    first: dict[int, float] = {}
    for i, t in zip(indexes, starts, strict=True):
        if i not in first or t < first[i]:
            first[i] = t
    lat = [(first[i] - sent[i]) * 1000 for i in range(len(sent)) if i in first]
    return {
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
        "mean_ms": statistics.fmean(lat) if lat else float("nan"),
        "samples": len(lat),
    }


def run_latency(
    ctx: Context, system: System, scenario: str, run: int, *, n: int, rate: float, inproc: bool
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "n": n,
        "rate": rate,
        "producer": "in-process" if inproc else "other process",
    }
    with ctx.target(system, f"{system.name}_{scenario}_{run}") as target:
        call(ctx, system, "setup", dsn=target.dsn)
        target.maintain()
        if inproc:
            out = ctx.logs / f"{system.name}-{scenario}-r{run}-inproc.json"
            call(
                ctx,
                system,
                "latency-inproc",
                timeout=n / rate + 120,
                dsn=target.dsn,
                n=n,
                rate=rate,
                out=out,
            )
            report = json.loads(out.read_text())
            sent = report["sent"]
            reports = [report]
        else:
            worker = Worker(ctx, system, target.dsn, 16, 0, f"{system.name}-{scenario}-r{run}-w0")
            try:
                worker.wait_ready()
                time.sleep(1.5)  # an idle worker: connected, listening, nothing to do
                out = ctx.logs / f"{system.name}-{scenario}-r{run}-producer.json"
                call(
                    ctx,
                    system,
                    "produce",
                    timeout=n / rate + 120,
                    dsn=target.dsn,
                    n=n,
                    rate=rate,
                    out=out,
                )
                sent = json.loads(out.read_text())["sent"]
                wait_drained(target, [worker], n, 120.0)
                reports = [worker.stop()]
            finally:
                worker.kill()
        record.update(_verify(target, system, n, reports))
        record.update(_latencies(sent, reports[0]["indexes"], reports[0]["start_times"]))
    return record


# -- pgbench baseline -------------------------------------------------------------------------
def load_queries(path: Path) -> dict[str, str]:
    """`{name: sql}` from a jobyard queries file (`-- name: x` headers), read as a file so the
    orchestrator never imports jobyard."""
    parts = re.split(r"^-- name: (\w+)\s*$", path.read_text(encoding="utf-8"), flags=re.M)
    return {name: sql.strip() for name, sql in zip(parts[1::2], parts[2::2], strict=True)}


# What a cycle leaves for the next one: the jobs it claimed, as the JSON rows of their results.
_CLAIMED_VARS = """\
SELECT coalesce(jsonb_agg(jsonb_build_object(
           'id', id, 'attempt', attempt, 'owner', owner, 'outcome', 'completed',
           'error', NULL, 'retry_delay', 0.0)), '[]') AS rows
FROM claimed \\gset"""
# Its value before a client's first cycle (pgbench -D).
_EMPTY_VARS = {"rows": "[]"}
# The engine runs the cycle on a connection that always uses the generic plan.
PGBENCH_OPTIONS = "-c plan_cache_mode=force_generic_plan"


def pgbench_sql(src: Path) -> str:
    """jobyard's own `complete_and_claim` statement as a pgbench command.

    The text comes from src/jobyard/store/postgres/queries.sql at run time, with the parameters
    a node of concurrency 16 passes (one unlimited type, max_jobs 16, the database clock); the
    jobs a cycle claims are kept in a pgbench variable and completed by the next cycle, as a
    busy node does. So the baseline follows the engine's SQL when it changes.
    """
    queries = load_queries(src / "jobyard" / "store" / "postgres" / "queries.sql")
    lines = queries["complete_and_claim"].splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    statement = "\n".join(lines).strip().rstrip(";")
    marker = "\nSELECT a.applied"
    if not statement.startswith("WITH ") or statement.count(marker) != 1:
        raise BenchError("complete_and_claim no longer has the WITH ... SELECT shape pgbench needs")
    values = {
        "types": "'{bench}'",
        "limits": "'{NULL}'",
        "max_jobs": "16",
        "owner": "'pgbench'",
        "now": "NULL::timestamptz",
        "rows": ":rows",
        "keys": "'{}'",
    }
    ctes = bind_literals(statement.split(marker, 1)[0], values, "complete_and_claim")
    return f"{ctes}\n{_CLAIMED_VARS}"


def bind_literals(sql: str, values: dict[str, str], name: str) -> str:
    """`sql` with each `%(key)s` parameter replaced by the SQL text in `values`; every
    parameter must have one, so a new parameter in the engine's SQL stops the run."""
    for key, value in values.items():
        sql = sql.replace(f"%({key})s", value)
    if "%(" in sql:
        raise BenchError(f"{name} takes a parameter the benchmark does not set")
    return sql


_HEADER = (
    "-- GENERATED by bench/run.py from src/jobyard/store/postgres/queries.sql; do not edit.\n"
    "-- jobyard's complete_and_claim (16 jobs of one unlimited type, database clock): each cycle\n"
    "-- completes the jobs the previous one claimed (kept in a pgbench variable) and claims the\n"
    "-- next 16; no Python, no job.\n"
)


def pgbench_scripts(src: Path) -> dict[str, tuple[str, str]]:
    """The ways a node can send its cycle: {variant: (file, text)}.

    - "statement": the cycle alone, one autocommit statement with a synchronous commit
      (jobyard's default);
    - "statement-async": the same in a transaction with `SET LOCAL synchronous_commit = off`
      (jobyard's opt-in `fast_transitions`).
    """
    cycle = pgbench_sql(src)
    return {
        "statement": (
            "cycle.sql",
            _HEADER + f"-- Variant 'statement': one statement, a synchronous commit.\n\n{cycle}\n",
        ),
        "statement-async": (
            "cycle_async.sql",
            _HEADER + "-- Variant 'statement-async': the commit does not wait for the disk.\n\n"
            f"BEGIN;\nSET LOCAL synchronous_commit = off;\n{cycle}\nCOMMIT;\n",
        ),
    }


def engine_protocol(src: Path) -> str:
    """Which variant the benchmarked jobyard's PostgreSQL store uses by default, read from its
    source: whether fast transitions (asynchronous commits) are on by default."""
    store = (src / "jobyard" / "store" / "postgres" / "store.py").read_text(encoding="utf-8")
    if re.search(r"fast_transitions: bool = True", store):
        return "statement-async"
    return "statement"


def run_pgbench(ctx: Context) -> dict[str, Any]:
    system = SYSTEMS["jobyard"]
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise BenchError("pgbench is not installed")
    scripts = pgbench_scripts(ctx.jobyard_src)
    for filename, text in scripts.values():
        (PGBENCH_DIR / filename).write_text(text, encoding="utf-8")
    defines = [arg for k, v in _EMPTY_VARS.items() for arg in ("-D", f"{k}={v}")]
    results: list[dict[str, Any]] = []
    for variant, (filename, _) in scripts.items():
        for clients in ctx.sizes.pgbench_clients:
            # A fresh database each time: claimed and completed rows leave dead index entries
            # behind (this server does not autovacuum), which would slow every later run.
            with ctx.target(system, f"jobyard_pgbench_{variant}_{clients}") as target:
                call(ctx, system, "setup", dsn=target.dsn)
                target.execute((PGBENCH_DIR / "backlog.sql").read_text())
                target.maintain()
                args = [
                    pgbench, "-n", "-M", "prepared", *defines,
                    "-f", f"{PGBENCH_DIR / filename}@10",
                    "-f", f"{PGBENCH_DIR / 'refill.sql'}@1",
                    "-c", str(clients), "-j", str(min(2, clients)),
                    "-T", str(ctx.sizes.pgbench_seconds),
                    "-h", ctx.pg.host, "-p", str(ctx.pg.port), "-U", ctx.pg.user, target.db,
                ]  # fmt: skip
                env = {**os.environ, "PGOPTIONS": PGBENCH_OPTIONS}
                proc = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
                logfile = ctx.log_file(f"pgbench-{variant}-c{clients}")
                logfile.write_text(proc.stdout + proc.stderr)
                if proc.returncode != 0:
                    raise BenchError(
                        f"pgbench {variant} -c {clients} failed: {proc.stderr.strip()[-300:]}"
                    )
                completed = int(target.scalar(system.done_sql) or 0)
                states = dict(target.rows(system.status_sql))
            match = re.search(r"SQL script 1:.*?- (\d+) transactions", proc.stdout, re.DOTALL)
            results.append(
                {
                    "variant": variant,
                    "clients": clients,
                    "threads": min(2, clients),
                    "seconds": ctx.sizes.pgbench_seconds,
                    "completed": completed,
                    "jobs_per_s": completed / ctx.sizes.pgbench_seconds,
                    "claim_transactions": int(match.group(1)) if match else None,
                    "pending_after": int(states.get("pending", 0)),
                    "load": os.getloadavg()[0],
                }
            )
            log(f"  pgbench {variant} -c {clients}: {results[-1]['jobs_per_s']:.0f} jobs/s")
    return {
        "scripts": {v: f"bench/pgbench/{f}" for v, (f, _) in scripts.items()},
        "engine_variant": engine_protocol(ctx.jobyard_src),
        "runs": results,
    }


# -- the floor under S2 -----------------------------------------------------------------------
FLOOR_SCRIPT = BENCH / "floor.py"
FLOOR_PROBES = ("pgbench", "psycopg", "asyncpg")
LATENCY_PROBES = ("psycopg", "asyncpg")  # S3's floor: bare drivers, no pgbench equivalent


def insert_job_pgbench(src: Path) -> str:
    """jobyard's one-job insert (without its NOTIFY) with a no-op job's values, for pgbench."""
    sql = load_queries(src / "jobyard" / "store" / "postgres" / "queries.sql")["insert_job"]
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    values = {
        "type": "'bench'",
        "payload": "'{\"i\": 1}'",
        "priority": "0",
        "max_attempts": "3",
        "run_at": "NULL",
        "now": "NULL::timestamptz",
    }
    sql = bind_literals("\n".join(lines).strip().rstrip(";"), values, "insert_job")
    return (
        "-- GENERATED by bench/run.py from src/jobyard/store/postgres/queries.sql; do not edit.\n"
        "-- jobyard's one-job insert, one autocommit statement and synchronous commit each.\n\n"
        f"{sql};\n"
    )


def floor_probe(
    python: Path, driver: str, path: str, dsn: str, queries: Path, *extra: str
) -> dict[str, Any]:
    """Run bench/floor.py once with `python` and return the JSON line it printed."""
    if not python.exists():
        raise BenchError(f"{python} is missing (make bench builds it)")
    args = [
        str(python), str(FLOOR_SCRIPT), "--driver", driver, "--path", path, "--dsn", dsn,
        "--queries", str(queries), *extra,
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"floor {path} {driver} failed: {proc.stderr.strip()[-300:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_floor(ctx: Context) -> dict[str, Any]:
    """S2's floor: the same one-row insert and commit per call with no job system around it:
    pgbench (no Python at all), and bench/floor.py on bare psycopg (jobyard's driver) and bare
    asyncpg (PgQueuer's), `runs` times each against a fresh database, interleaved. Then S3's:
    enqueue, notification and claim with jobyard's SQL on each bare driver (bench/floor.py
    --path latency), `runs` times each."""
    system = SYSTEMS["jobyard"]
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise BenchError("pgbench is not installed")
    script = PGBENCH_DIR / "insert.sql"
    script.write_text(insert_job_pgbench(ctx.jobyard_src), encoding="utf-8")
    queries = ctx.jobyard_src / "jobyard" / "store" / "postgres" / "queries.sql"
    pythons = {"psycopg": SYSTEMS["jobyard"].python, "asyncpg": SYSTEMS["pgqueuer"].python}
    results: dict[str, list[float]] = {probe: [] for probe in FLOOR_PROBES}
    for run in range(1, ctx.sizes.runs + 1):
        k = (run - 1) % len(FLOOR_PROBES)
        for probe in FLOOR_PROBES[k:] + FLOOR_PROBES[:k]:
            with ctx.target(system, f"jobyard_floor_{probe}_{run}") as target:
                call(ctx, system, "setup", dsn=target.dsn)
                target.maintain()
                if probe == "pgbench":
                    args = [
                        pgbench, "-n", "-M", "prepared", "-f", str(script), "-c", "1",
                        "-T", str(ctx.sizes.pgbench_seconds),
                        "-h", ctx.pg.host, "-p", str(ctx.pg.port), "-U", ctx.pg.user, target.db,
                    ]  # fmt: skip
                    proc = subprocess.run(args, capture_output=True, text=True, check=False)
                    match = re.search(r"tps = ([\d.]+)", proc.stdout)
                    if proc.returncode != 0 or match is None:
                        raise BenchError(f"pgbench insert failed: {proc.stderr.strip()[-300:]}")
                    rate = float(match.group(1))
                else:
                    printed = floor_probe(
                        pythons[probe], probe, "insert", target.dsn, queries,
                        "--n", str(ctx.sizes.single_n),
                    )  # fmt: skip
                    rate = float(printed["jobs_per_s"])
            results[probe].append(rate)
            log(f"  floor {probe} run {run}: {rate:.0f} inserts/s")
    latency: dict[str, list[dict[str, float]]] = {driver: [] for driver in LATENCY_PROBES}
    for run in range(1, ctx.sizes.runs + 1):
        k = (run - 1) % len(LATENCY_PROBES)
        for driver in LATENCY_PROBES[k:] + LATENCY_PROBES[:k]:
            with ctx.target(system, f"jobyard_floor_latency_{driver}_{run}") as target:
                call(ctx, system, "setup", dsn=target.dsn)
                target.maintain()
                printed = floor_probe(
                    pythons[driver], driver, "latency", target.dsn, queries,
                    "--n", str(ctx.sizes.latency_n), "--rate", str(ctx.sizes.latency_rate),
                )  # fmt: skip
            latency[driver].append(printed)
            log(f"  latency floor {driver} run {run}: p50 {latency[driver][-1]['p50_ms']:.2f} ms")
    return {
        "probes": {
            probe: {"runs": rates, "median": statistics.median(rates)}
            for probe, rates in results.items()
        },
        "latency": {
            driver: {
                "runs": runs,
                **{
                    key: statistics.median(r[key] for r in runs)
                    for key in ("p50_ms", "p95_ms", "p99_ms")
                },
            }
            for driver, runs in latency.items()
        },
        "script": "bench/pgbench/insert.sql",
        "n": ctx.sizes.single_n,
        "latency_n": ctx.sizes.latency_n,
        "pgbench_seconds": ctx.sizes.pgbench_seconds,
        "load": os.getloadavg()[0],
    }


# -- conditions -------------------------------------------------------------------------------
def conditions(pg: Pg, systems: Sequence[System], ctx: Context) -> dict[str, Any]:
    info: dict[str, Any] = {}
    with pg.connect() as conn:
        info["postgresql"] = conn.execute("SELECT version()").fetchone()[0]  # type: ignore[index]
        settings = {}
        for name in (
            "shared_buffers", "synchronous_commit", "fsync", "full_page_writes", "wal_level",
            "max_wal_size", "work_mem", "autovacuum", "max_connections", "jit",
        ):  # fmt: skip
            settings[name] = conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
        info["postgresql_settings"] = settings
    versions: dict[str, Any] = {}
    for system in systems:
        try:
            versions[system.name] = call(ctx, system, "versions")
        except BenchError as exc:
            versions[system.name] = {"error": str(exc)}
    info["versions"] = versions
    info["python_orchestrator"] = platform.python_version()
    info["jobyard_git"] = _git_state(ctx)
    info["cpu_count"] = os.cpu_count()
    info["cpu_model"] = _cpu_model()
    info["memory_total"] = _meminfo()
    info["machine"] = platform.platform()
    info["pgbench"] = subprocess.run(
        ["pgbench", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    req = BENCH / "requirements-peers.txt"
    info["peers_requirements"] = (
        [ln for ln in req.read_text().splitlines() if ln and not ln.startswith("#")]
        if req.exists()
        else []
    )
    return info


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    ).stdout.strip()


def _git_state(ctx: Context) -> dict[str, Any]:
    if not ctx.jobyard_ref:
        changed = git("status", "--porcelain", "src").splitlines()
        return {
            "source": "working tree src/, copied at the start of the run",
            "commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_changes_in_src": bool(changed),
            "changed_files": [line.split(maxsplit=1)[-1] for line in changed],
        }
    return {
        "source": f"git {ctx.jobyard_ref}",
        "commit": ctx.jobyard_commit,
        "uncommitted_changes_in_src": False,
    }


def snapshot_src(ref: str, into: Path) -> tuple[Path, str]:
    """A private copy of jobyard's src/ for the whole run, so edits made to the working tree
    while the suite runs cannot change it half-way. `ref` empty: the working tree as it is now;
    otherwise src/ as committed at that git ref. Returns the copy and the commit."""
    if not ref:
        shutil.copytree(
            ROOT / "src", into / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        return into / "src", git("rev-parse", "--short", "HEAD")
    commit = git("rev-parse", "--short", f"{ref}^{{commit}}")
    if not commit:
        raise SystemExit(f"unknown git ref {ref!r}")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "src"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src", commit


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _meminfo() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    return "?"


# -- the suite --------------------------------------------------------------------------------
def wait_for_quiet(threshold: float, limit: float) -> float:
    """On a shared machine, let someone else's burst of work pass before measuring: wait until
    the 1-minute load average is below `threshold`, at most `limit` seconds. Returns the wait."""
    if threshold <= 0 or limit <= 0:
        return 0.0
    t0 = time.monotonic()
    while os.getloadavg()[0] >= threshold and time.monotonic() - t0 < limit:
        time.sleep(2.0)
    return time.monotonic() - t0


def plan(
    scenarios: Sequence[str], systems: Sequence[System], sizes: Sizes
) -> list[tuple[str, System, int]]:
    """(scenario, system, run) in order: scenario by scenario, runs interleaved across systems
    (rotating which goes first), so slow drifts in machine load spread over all of them."""
    steps: list[tuple[str, System, int]] = []
    for scenario in scenarios:
        if scenario in SUITE_SCENARIOS:
            if any(s.name == "jobyard" for s in systems):
                steps.append((scenario, SYSTEMS["jobyard"], 1))
            continue
        eligible = [s for s in systems if s.backend == "postgres" or scenario in SQLITE_SCENARIOS]
        for run in range(1, sizes.runs + 1):
            k = (run - 1) % max(1, len(eligible))
            for system in eligible[k:] + eligible[:k]:
                if scenario == "S3" and system.backend == "sqlite":
                    steps.append(("S3-inproc", system, run))
                steps.append((scenario, system, run))
    return steps


def run_step(ctx: Context, scenario: str, system: System, run: int) -> dict[str, Any]:
    sz = ctx.sizes
    if scenario == "S1":
        return run_drain(ctx, system, scenario, run, n=sz.drain_n, workers=[(16, 0)], explain=True)
    if scenario == "S2":
        return run_single(ctx, system, scenario, run, n=sz.single_n)
    if scenario in ("S3", "S3-inproc"):
        return run_latency(
            ctx,
            system,
            scenario,
            run,
            n=sz.latency_n,
            rate=sz.latency_rate,
            inproc=scenario == "S3-inproc",
        )
    if scenario == "S4":
        return run_drain(ctx, system, scenario, run, n=sz.drain_n, workers=[(8, 0), (8, 0)])
    if scenario == "S5":
        if not system.global_limit:
            return {"skipped": f"{system.label} has no cluster-wide concurrency limit"}
        return run_drain(ctx, system, scenario, run, n=sz.drain_n, workers=[(16, 16)])
    if scenario == "S6":
        return run_drain(
            ctx,
            system,
            scenario,
            run,
            n=sz.drain_n,
            workers=[(16, 0)],
            history=sz.history_n,
            explain=True,
        )
    if scenario == "memory":
        record = run_drain(
            ctx, system, scenario, run, n=sz.memory_n, workers=[(16, 0)], memory=True
        )
        record["limit_mb"] = MEMORY_LIMIT_MB
        record["within_limit"] = record["vmhwm_mb"] < MEMORY_LIMIT_MB
        return record
    if scenario == "pgbench":
        return run_pgbench(ctx)
    if scenario == "floor":
        return run_floor(ctx)
    raise BenchError(f"unknown scenario {scenario}")


def summarize(step: str, record: dict[str, Any]) -> str:
    if "skipped" in record:
        return "n/a"
    if "error" in record:
        return f"FAILED: {record['error']}"
    if "p50_ms" in record:
        return (
            f"p50 {record['p50_ms']:.1f} ms, p95 {record['p95_ms']:.1f} ms, "
            f"p99 {record['p99_ms']:.1f} ms"
        )
    if "probes" in record:
        return ", ".join(f"{p} {v['median']:.0f}/s" for p, v in record["probes"].items())
    if "runs" in record:
        return ", ".join(
            f"{r.get('variant', '')} c={r['clients']}: {r['jobs_per_s']:.0f}/s"
            for r in record["runs"]
        )
    text = f"{record['jobs_per_s']:.0f} jobs/s"
    if "enqueue_per_s" in record:
        text += f" (bulk enqueue {record['enqueue_per_s']:.0f}/s)"
    if "vmhwm_mb" in record:
        text += f", peak RSS {record['vmhwm_mb']:.1f} MB"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 run per scenario, small N")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS), help="comma-separated")
    parser.add_argument("--runs", type=int, default=0, help="runs per scenario (default 3)")
    parser.add_argument("--pg-host", default=os.environ.get("BENCH_PGHOST", "127.0.0.1"))
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("BENCH_PGPORT", "5432")))
    parser.add_argument("--pg-user", default=os.environ.get("BENCH_PGUSER", "postgres"))
    parser.add_argument("--out", default="", help="results file (default bench/results/<ts>.json)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=3.0,
        help="before each run, wait (up to 60 s, 10 min in all) for the 1-minute load average "
        "to fall below this; 0 disables",
    )
    parser.add_argument("--report", action="store_true", help="render the report afterwards")
    parser.add_argument(
        "--jobyard-ref",
        default="",
        help="benchmark jobyard's src/ at this git ref (default: the working tree as it is "
        "when the run starts)",
    )
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = Sizes(**{**asdict(sizes), "runs": args.runs})
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    systems = [SYSTEMS[n] for n in names]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in scenarios if s not in ALL_SCENARIOS]
    if bad:
        parser.error(f"unknown scenarios {bad}; choose from {', '.join(ALL_SCENARIOS)}")
    for system in systems:
        if not system.python.exists():
            parser.error(f"{system.python} is missing: run `make bench` to create it")

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix=f"jobyard-bench-logs-{stamp}-"))
    src, commit = snapshot_src(args.jobyard_ref, logs)
    ctx = Context(Pg(args.pg_host, args.pg_port, args.pg_user), sizes, logs, src)
    ctx.jobyard_ref, ctx.jobyard_commit = args.jobyard_ref, commit

    # SIGTERM (and SIGINT, even where a background shell ignores it) stops the suite the way
    # Ctrl-C does: the current run's workers are killed and its database dropped.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)

    began = time.monotonic()
    log(
        f"jobyard benchmark: systems {', '.join(names)}; scenarios {', '.join(scenarios)}; "
        f"{sizes.runs} run(s) each{' (quick)' if args.quick else ''}; logs in {logs}"
    )
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "sizes": asdict(sizes),
        "systems": {
            s.name: {"label": s.label, "backend": s.backend, "notes": s.notes} for s in systems
        },
        "scenarios": scenarios,
        "load_before": os.getloadavg(),
        "conditions": conditions(ctx.pg, systems, ctx),
        "records": [],
    }
    steps = plan(scenarios, systems, sizes)
    wait_budget = 600.0
    for k, (scenario, system, run) in enumerate(steps, 1):
        waited = wait_for_quiet(args.quiet_load, min(60.0, wait_budget))
        wait_budget -= waited
        t0 = time.monotonic()
        try:
            record = run_step(ctx, scenario, system, run)
        except BenchError as exc:
            record = {"error": str(exc)}
        except Exception as exc:  # a bug in the suite or an adapter: record it and go on
            record = {"error": f"{type(exc).__name__}: {exc}"}
        record.update(
            scenario=scenario,
            system=system.name,
            run=run,
            wall_seconds=time.monotonic() - t0,
            load=os.getloadavg()[0],
            waited_for_quiet=waited,
        )
        results["records"].append(record)
        log(f"{k}/{len(steps)} {scenario} {system.name} run {run}: {summarize(scenario, record)}")
        out.write_text(json.dumps(results, indent=1), encoding="utf-8")  # partial results too
    results["load_after"] = os.getloadavg()
    results["runtime_seconds"] = time.monotonic() - began
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    failed = sum(1 for r in results["records"] if "error" in r)
    if args.keep_logs or failed:
        log(f"the processes' logs are kept in {logs}")
    else:
        shutil.rmtree(logs, ignore_errors=True)
    log(
        f"done in {results['runtime_seconds'] / 60:.1f} min, {failed} failed run(s); "
        f"results in {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}"
    )
    if args.report:
        import report

        report.main([str(out)])
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc or 'Ctrl-C'}); partial results are kept")
        raise SystemExit(130) from None
