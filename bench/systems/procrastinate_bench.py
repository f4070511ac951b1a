"""Procrastinate's side of the benchmark. Run with bench/.venv-peers/bin/python.

Used as its docs show for asyncio code: an `App` on a `PsycopgConnector` (psycopg 3 and its
pool), `Task.batch_defer_async` for bulk enqueue, `Task.defer_async` for single ones, and
`App.run_worker_async(concurrency=...)` with LISTEN/NOTIFY (`listen_notify=True`, the default).
The worker is stopped by cancelling its task, which the docs describe as a graceful shutdown.

The pool gets `max_size` = concurrency + 2 (psycopg_pool's default of 4 connections would leave
16 concurrent jobs, the LISTEN connection and the heartbeat queueing for 3 connections); jobs are
kept after completion (`delete_jobs="never"`, the default), with status `succeeded`, which is
what the orchestrator counts. Procrastinate has no cluster-wide concurrency limit per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import statistics
import time
from typing import Any

import procrastinate
import psycopg
from _common import (
    JOB_TYPE,
    announce_ready,
    base_parser,
    configure_logging,
    emit,
    fail,
    paced,
    payload_for,
    rss_now_mb,
    stop_event,
    write_json,
    write_worker_report,
)

STARTS: list[tuple[float, Any]] = []


def make_app(dsn: str, concurrency: int = 16) -> tuple[procrastinate.App, Any]:
    connector = procrastinate.PsycopgConnector(
        conninfo=dsn, min_size=2, max_size=max(4, concurrency + 2)
    )
    app = procrastinate.App(connector=connector)

    @app.task(name=JOB_TYPE, queue=JOB_TYPE)
    async def bench(i: int) -> None:
        STARTS.append((time.time(), i))

    return app, bench


async def setup(dsn: str) -> dict[str, Any]:
    app, _ = make_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
    return {"installed": True}


async def enqueue_bulk(dsn: str, n: int, batch: int) -> dict[str, Any]:
    app, task = make_app(dsn)
    async with app.open_async():
        t0 = time.perf_counter()
        for first in range(0, n, batch):
            await task.batch_defer_async(
                *(payload_for(i) for i in range(first, min(n, first + batch)))
            )
        seconds = time.perf_counter() - t0
    return {"n": n, "seconds": seconds}


async def enqueue_single(dsn: str, n: int) -> dict[str, Any]:
    app, task = make_app(dsn)
    async with app.open_async():
        t0 = time.perf_counter()
        for i in range(n):
            await task.defer_async(**payload_for(i))
        seconds = time.perf_counter() - t0
    return {"n": n, "seconds": seconds}


async def produce(dsn: str, n: int, rate: float, out: str) -> dict[str, Any]:
    app, task = make_app(dsn)
    async with app.open_async():

        async def send(i: int) -> None:
            await task.defer_async(**payload_for(i))

        sent = await paced(n, rate, send)
    write_json(out, {"sent": sent})
    return {"n": n, "seconds": sent[-1] - sent[0] if sent else 0.0}


async def worker(dsn: str, concurrency: int, limit: int, out: str) -> dict[str, Any]:
    if limit:
        fail("Procrastinate has no cluster-wide concurrency limit")
    app, _ = make_app(dsn, concurrency)
    async with app.open_async():
        stop = stop_event()
        rss_ready = rss_now_mb()
        t_start = time.time()
        run = asyncio.create_task(
            app.run_worker_async(
                queues=[JOB_TYPE], concurrency=concurrency, install_signal_handlers=False
            )
        )
        announce_ready(t_start)
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            stopper.cancel()
            await run
            fail("the Procrastinate worker stopped by itself")
        run.cancel()  # graceful: the worker stops fetching and waits for running jobs
        with contextlib.suppress(asyncio.CancelledError):
            await run
    write_worker_report(
        out, t_start=t_start, starts=STARTS, decode=int, extra={"rss_ready_mb": rss_ready}
    )
    return {"executed": len(STARTS)}


def explain_claim(dsn: str, repeat: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE Procrastinate's fetch_job query (a plpgsql function; the time is the
    whole call), rolled back. It fetches one job per call."""
    query = (
        "SELECT id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, "
        "queue_name, attempts, worker_id "
        "FROM procrastinate_fetch_job_v2(%(queues)s::varchar[], %(worker_id)s)"
    )
    params = {"queues": [JOB_TYPE], "worker_id": None}
    execution: list[float] = []
    planning: list[float] = []
    plan_text = ""
    with psycopg.connect(dsn) as conn:
        for attempt in range(repeat + 1):
            with conn.transaction(force_rollback=True):
                if attempt == repeat:
                    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, params).fetchall()
                    plan_text = "\n".join(r[0] for r in rows)
                    break
                row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params).fetchone()
                assert row is not None
                execution.append(float(row[0][0]["Execution Time"]))
                planning.append(float(row[0][0]["Planning Time"]))
    return {
        "query": "Procrastinate fetch_job (procrastinate_fetch_job_v2), one job per call",
        "execution_ms": execution,
        "planning_ms": planning,
        "median_ms": statistics.median(execution),
        "plan": plan_text,
    }


def versions() -> dict[str, Any]:
    import psycopg_pool

    return {
        "procrastinate": procrastinate.__version__,
        "psycopg": psycopg.__version__,
        "psycopg_pool": psycopg_pool.__version__,
        "python": platform.python_version(),
        "event_loop": "asyncio",
    }


def main() -> None:
    parser, _ = base_parser("Procrastinate benchmark adapter")
    args = parser.parse_args()
    configure_logging()
    cmd = args.command
    if cmd == "versions":
        emit(versions())
    elif cmd == "setup":
        emit(asyncio.run(setup(args.dsn)))
    elif cmd == "enqueue-bulk":
        emit(asyncio.run(enqueue_bulk(args.dsn, args.n, args.batch)))
    elif cmd == "enqueue-single":
        emit(asyncio.run(enqueue_single(args.dsn, args.n)))
    elif cmd == "produce":
        emit(asyncio.run(produce(args.dsn, args.n, args.rate, args.out)))
    elif cmd == "worker":
        emit(asyncio.run(worker(args.dsn, args.concurrency, args.limit, args.out)))
    elif cmd == "explain-claim":
        emit(explain_claim(args.dsn, args.repeat))
    else:  # pragma: no cover - argparse refuses unknown commands
        fail(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
