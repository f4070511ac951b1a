"""The floors under S2 and S3: what the drivers allow with no job system around them.

`--path insert` (S2's floor) sends jobyard's own one-job insert (`insert_job` from
src/jobyard/store/postgres/queries.sql, without its NOTIFY), one statement and one synchronous
commit per call, awaited one after another from one connection, exactly as S2's producer does,
through a bare driver:

    .venv/bin/python bench/floor.py --driver psycopg --dsn ... --n 5000
    bench/.venv-peers/bin/python bench/floor.py --driver asyncpg --dsn ... --n 5000

`--path latency` (S3's floor) is S3's path from enqueue to claim with nothing else: a worker
process LISTENs on one connection and, on each notification, sends jobyard's lean claim
(`claim_jobs`) on another, then records the results of what it claimed (`complete_and_claim`
with nothing to claim), as an idle jobyard node does; this process enqueues `--n` jobs at
`--rate` per second with jobyard's insert and its NOTIFY in one statement. Latency is the
time the claim returned minus the time taken just before the insert was sent: S3's measure,
less the job body's start. Prints {"n", "p50_ms", "p95_ms", "p99_ms"}.

psycopg 3 is the driver jobyard uses; asyncpg, PgQueuer's. Statements are prepared (psycopg
after their first use, asyncpg always), the claim with the generic plan the engine's claim
connection uses, the event loop is asyncio for psycopg and uvloop for asyncpg, as each system's
worker runs. No job system can go faster than its driver sends these statements.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "systems"))
from _common import paced  # S3's own pacing, shared with the adapters

QUERIES = Path(__file__).resolve().parent.parent / "src/jobyard/store/postgres/queries.sql"
CHANNEL = "jobyard_jobs"  # jobyard's enqueue channel (jobyard.store.records.CHANNEL_JOBS)
OWNER = "floor-worker"


def load(path: Path) -> dict[str, str]:
    parts = re.split(r"^-- name: (\w+)\s*$", path.read_text(encoding="utf-8"), flags=re.M)
    return {
        name: sql.strip().rstrip(";") for name, sql in zip(parts[1::2], parts[2::2], strict=True)
    }


def with_notify(insert: str) -> str:
    """The insert and its NOTIFY in one statement, composed as jobyard's store composes it."""
    return (
        f"WITH inserted AS (\n{insert}\n)\nSELECT inserted.* FROM inserted, "
        f"(SELECT pg_notify('{CHANNEL}', %(notify)s)) AS sent"
    )


def positional(sql: str) -> tuple[str, list[str]]:
    """`%(name)s` placeholders to asyncpg's `$n`, numbered by first appearance."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, sql), names


def job_values(i: int, *, notify: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {
        "type": "bench",
        "payload": json.dumps({"i": i}),
        "priority": 0,
        "max_attempts": 3,
        "run_at": None,
        "now": None,
    }
    if notify:
        values["notify"] = "bench"
    return values


CLAIM = {"types": ["bench"], "max_jobs": 16, "owner": OWNER, "now": None}


def results(rows: list[tuple[int, int]]) -> dict[str, Any]:
    """complete_and_claim's parameters to record `(id, attempt)` rows as completed."""
    done = [
        {"id": i, "attempt": a, "owner": OWNER, "outcome": "completed", "error": None,
         "retry_delay": 0}
        for i, a in rows
    ]  # fmt: skip
    return {
        "rows": json.dumps(done), "types": [], "limits": [], "max_jobs": 0, "owner": OWNER,
        "now": None, "keys": [],
    }  # fmt: skip


# -- S2's floor: the insert alone ---------------------------------------------------------------
async def insert_psycopg(queries: dict[str, str], dsn: str, n: int) -> float:
    import psycopg

    sql = queries["insert_job"]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for i in range(20):  # warm: connection, prepared statement
            await (await conn.execute(sql, job_values(i), prepare=True)).fetchall()
        t0 = time.perf_counter()
        for i in range(n):
            await (await conn.execute(sql, job_values(i), prepare=True)).fetchall()
        return time.perf_counter() - t0


async def insert_asyncpg(queries: dict[str, str], dsn: str, n: int) -> float:
    import asyncpg

    sql, names = positional(queries["insert_job"])
    conn = await asyncpg.connect(dsn)
    try:
        statement = await conn.prepare(sql)
        for i in range(20):
            await statement.fetch(*(job_values(i)[k] for k in names))
        t0 = time.perf_counter()
        for i in range(n):
            await statement.fetch(*(job_values(i)[k] for k in names))
        return time.perf_counter() - t0
    finally:
        await conn.close()


# -- S3's floor: enqueue, notification, claim --------------------------------------------------
async def worker_psycopg(queries: dict[str, str], dsn: str, n: int) -> dict[int, float]:
    import psycopg

    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, prepare_threshold=0)
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await listener.execute(f"LISTEN {CHANNEL}")
    claimed: dict[int, float] = {}
    print("READY", flush=True)
    while len(claimed) < n:
        async for _ in listener.notifies(stop_after=1):
            pass
        rows = await (await conn.execute(queries["claim_jobs"], CLAIM)).fetchall()
        now = time.time()
        # claim_jobs returns jobyard_jobs.*: id, type, payload, status, priority, attempt, ...
        for row in rows:
            claimed[int(row[2]["i"])] = now
        if rows:
            done = results([(row[0], row[5]) for row in rows])
            await (await conn.execute(queries["complete_and_claim"], done)).fetchall()
    await listener.close()
    await conn.close()
    return claimed


async def worker_asyncpg(queries: dict[str, str], dsn: str, n: int) -> dict[int, float]:
    import asyncpg

    listener = await asyncpg.connect(dsn)
    conn = await asyncpg.connect(dsn)
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    claim_sql, claim_names = positional(queries["claim_jobs"])
    done_sql, done_names = positional(queries["complete_and_claim"])
    claim = await conn.prepare(claim_sql)
    complete = await conn.prepare(done_sql)
    woken = asyncio.Event()
    await listener.add_listener(CHANNEL, lambda *_: woken.set())
    claimed: dict[int, float] = {}
    print("READY", flush=True)
    while len(claimed) < n:
        await woken.wait()
        woken.clear()
        rows = await claim.fetch(*(CLAIM[k] for k in claim_names))
        now = time.time()
        for row in rows:
            claimed[int(json.loads(row["payload"])["i"])] = now
        if rows:
            done = results([(row["id"], row["attempt"]) for row in rows])
            await complete.fetch(*(done[k] for k in done_names))
    await listener.close()
    await conn.close()
    return claimed


async def produce_psycopg(queries: dict[str, str], dsn: str, n: int, rate: float) -> list[float]:
    import psycopg

    sql = with_notify(queries["insert_job"])
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:

        async def send(i: int) -> None:
            await (await conn.execute(sql, job_values(i, notify=True), prepare=True)).fetchall()

        return await paced(n, rate, send)


async def produce_asyncpg(queries: dict[str, str], dsn: str, n: int, rate: float) -> list[float]:
    import asyncpg

    sql, names = positional(with_notify(queries["insert_job"]))
    conn = await asyncpg.connect(dsn)
    try:
        statement = await conn.prepare(sql)

        async def send(i: int) -> None:
            await statement.fetch(*(job_values(i, notify=True)[k] for k in names))

        return await paced(n, rate, send)
    finally:
        await conn.close()


def percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Start the worker, wait until it listens and idles, produce, and compare the times."""
    out = Path(f"/tmp/jobyard-floor-{os.getpid()}.json")
    worker = subprocess.Popen(
        [sys.executable, __file__, "--driver", args.driver, "--dsn", args.dsn, "--n",
         str(args.n), "--queries", str(args.queries), "--role", "worker", "--out", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "READY":
            raise SystemExit("the floor's worker did not start")
        time.sleep(1.5)  # an idle worker, as in S3
        queries = load(args.queries)
        producer = produce_psycopg if args.driver == "psycopg" else produce_asyncpg
        sent = asyncio.run(producer(queries, args.dsn, args.n, args.rate))
        if worker.wait(timeout=120) != 0:
            raise SystemExit("the floor's worker failed")
        claimed = json.loads(out.read_text(encoding="utf-8"))
    finally:
        worker.kill()
        out.unlink(missing_ok=True)
    ms = sorted((claimed[str(i)] - t) * 1000 for i, t in enumerate(sent))
    return {
        "n": args.n,
        "p50_ms": statistics.median(ms),
        "p95_ms": percentile(ms, 0.95),
        "p99_ms": percentile(ms, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=("psycopg", "asyncpg"), required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--path", choices=("insert", "latency"), default="insert")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--queries", type=Path, default=QUERIES, help="jobyard's queries.sql")
    parser.add_argument(
        "--role", choices=("main", "worker"), default="main", help=argparse.SUPPRESS
    )
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    queries = load(args.queries)
    if args.role == "worker":
        if args.driver == "psycopg":
            claimed = asyncio.run(worker_psycopg(queries, args.dsn, args.n))
        else:
            import uvloop

            claimed = uvloop.run(worker_asyncpg(queries, args.dsn, args.n))
        Path(args.out).write_text(json.dumps(claimed), encoding="utf-8")
        return
    if args.path == "latency":
        print(json.dumps(latency(args)))
        return
    if args.driver == "psycopg":
        seconds = asyncio.run(insert_psycopg(queries, args.dsn, args.n))
    else:
        import uvloop

        seconds = uvloop.run(insert_asyncpg(queries, args.dsn, args.n))
    print(json.dumps({"n": args.n, "seconds": seconds, "jobs_per_s": args.n / seconds}))


if __name__ == "__main__":
    main()
