"""jobyard's side of the benchmark, through its public API only.

Run with the main .venv's python. Works on PostgreSQL (`postgresql://...`) and SQLite
(`sqlite:////absolute/path.db`). Everything is left at jobyard's defaults except what a scenario
asks for: the node's `concurrency` and, for the global-limit scenario, `Limits({"bench": N})`.
"""

from __future__ import annotations

import asyncio
import platform
import sqlite3
import statistics
import sys
import time
from typing import Any

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

import jobyard
from jobyard import Config, Dispatcher, Job, Limits, Queue, Store, open_store


def _open(dsn: str) -> tuple[Store, Queue]:
    store = open_store(dsn)
    queue = Queue(store)
    queue.declare(JOB_TYPE)
    return store, queue


async def _warm(store: Store) -> None:
    """Open the store's connections (and check the schema) before anything is timed."""
    await store.count_jobs()


async def setup(dsn: str) -> dict[str, Any]:
    store = open_store(dsn)
    try:
        version = await store.migrate()
    finally:
        await store.close()
    return {"schema_version": version}


async def enqueue_bulk(dsn: str, n: int, batch: int) -> dict[str, Any]:
    store, queue = _open(dsn)
    try:
        await _warm(store)
        t0 = time.perf_counter()
        for first in range(0, n, batch):
            payloads = [payload_for(i) for i in range(first, min(n, first + batch))]
            await queue.enqueue_many(JOB_TYPE, payloads)
        seconds = time.perf_counter() - t0
    finally:
        await store.close()
    return {"n": n, "seconds": seconds}


async def enqueue_single(dsn: str, n: int) -> dict[str, Any]:
    store, queue = _open(dsn)
    try:
        await _warm(store)
        t0 = time.perf_counter()
        for i in range(n):
            await queue.enqueue(JOB_TYPE, payload_for(i))
        seconds = time.perf_counter() - t0
    finally:
        await store.close()
    return {"n": n, "seconds": seconds}


async def produce(dsn: str, n: int, rate: float, out: str) -> dict[str, Any]:
    store, queue = _open(dsn)
    try:
        await _warm(store)

        async def send(i: int) -> None:
            await queue.enqueue(JOB_TYPE, payload_for(i))

        sent = await paced(n, rate, send)
    finally:
        await store.close()
    write_json(out, {"sent": sent})
    return {"n": n, "seconds": sent[-1] - sent[0] if sent else 0.0}


def _node(
    dsn: str, concurrency: int, limit: int
) -> tuple[Store, Queue, Dispatcher, list[tuple[float, Any]]]:
    store, queue = _open(dsn)
    limits = Limits({JOB_TYPE: limit}) if limit else Limits()
    dispatcher = Dispatcher(Config(concurrency=concurrency), store, queue, limits)
    starts: list[tuple[float, Any]] = []

    async def body(job: Job) -> None:
        starts.append((time.time(), job.payload))

    dispatcher.register_executor(JOB_TYPE, body)
    return store, queue, dispatcher, starts


def _index(payload: Any) -> int:
    return int(payload["i"])


async def worker(dsn: str, concurrency: int, limit: int, out: str) -> dict[str, Any]:
    store, _, dispatcher, starts = _node(dsn, concurrency, limit)
    await _warm(store)
    stop = stop_event()
    rss_ready = rss_now_mb()
    t_start = time.time()
    node = asyncio.create_task(dispatcher.start())
    announce_ready(t_start)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({node, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if node.done():  # the node ended on its own: a bug worth reporting
        stopper.cancel()
        await node  # re-raises what ended it
        fail("the jobyard node stopped by itself")
    await dispatcher.stop()
    await node
    await store.close()
    write_worker_report(
        out, t_start=t_start, starts=starts, decode=_index, extra={"rss_ready_mb": rss_ready}
    )
    return {"executed": len(starts)}


async def latency_inproc(
    dsn: str, n: int, rate: float, concurrency: int, out: str
) -> dict[str, Any]:
    """S3 with the producer inside the worker's process: one event loop does both."""
    store, queue, dispatcher, starts = _node(dsn, concurrency, 0)
    await _warm(store)
    t_start = time.time()
    node = asyncio.create_task(dispatcher.start())
    await asyncio.sleep(1.0)  # an idle node, as in the cross-process variant

    async def send(i: int) -> None:
        await queue.enqueue(JOB_TYPE, payload_for(i))

    sent = await paced(n, rate, send)
    for _ in range(6000):  # up to 60 s for the last jobs to start
        if len(starts) >= n or node.done():
            break
        await asyncio.sleep(0.01)
    await dispatcher.stop()
    await node
    await store.close()
    write_worker_report(out, t_start=t_start, starts=starts, decode=_index, extra={"sent": sent})
    return {"executed": len(starts)}


def explain_claim(dsn: str, concurrency: int, limit: int, repeat: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE jobyard's own dispatch cycle with no results to record (the claim
    alone), rolled back: `claim_jobs` with no limit, `complete_and_claim` with one, as the
    engine chooses.

    The query text comes from the installed jobyard, so it is always the one the engine runs.
    """
    import psycopg

    from jobyard.store.postgres.store import type_lock_key
    from jobyard.store.sql import load_queries

    queries = load_queries("jobyard.store.postgres", "queries.sql")
    params = {
        "types": [JOB_TYPE],
        "limits": [limit or None],
        "max_jobs": concurrency,
        "owner": "bench-explain",
        "now": None,
        "rows": "[]",
        "keys": [type_lock_key(JOB_TYPE)] if limit else [],
    }
    name = "complete_and_claim" if limit else "claim_jobs"
    execution: list[float] = []
    planning: list[float] = []
    plan_text = ""
    with psycopg.connect(dsn) as conn:
        for attempt in range(repeat + 1):
            with conn.transaction(force_rollback=True):
                if attempt == repeat:
                    rows = conn.execute(
                        "EXPLAIN (ANALYZE, BUFFERS) " + queries[name], params
                    ).fetchall()
                    plan_text = "\n".join(r[0] for r in rows)
                    break
                (doc,) = conn.execute(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + queries[name], params
                ).fetchone() or (None,)
                execution.append(float(doc[0]["Execution Time"]))
                planning.append(float(doc[0]["Planning Time"]))
    return {
        "query": f"jobyard {name} (store/postgres/queries.sql), claim only",
        "execution_ms": execution,
        "planning_ms": planning,
        "median_ms": statistics.median(execution),
        "plan": plan_text,
    }


def versions() -> dict[str, Any]:
    import psycopg

    return {
        "jobyard": jobyard.__version__,
        "psycopg": psycopg.__version__,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "event_loop": "asyncio",
    }


def main() -> None:
    parser, sub = base_parser("jobyard benchmark adapter")
    p = sub.add_parser("latency-inproc", help="S3 with producer and worker in one process")
    p.add_argument("--dsn", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--out", required=True)
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
    elif cmd == "latency-inproc":
        emit(asyncio.run(latency_inproc(args.dsn, args.n, args.rate, args.concurrency, args.out)))
    elif cmd == "explain-claim":
        emit(explain_claim(args.dsn, args.concurrency, args.limit, args.repeat))
    else:  # pragma: no cover - argparse refuses unknown commands
        fail(f"unknown command {cmd}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
