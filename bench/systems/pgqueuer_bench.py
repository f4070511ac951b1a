"""PgQueuer's side of the benchmark. Run with bench/.venv-peers/bin/python.

Used as PgQueuer's README shows: an asyncpg connection wrapped in `AsyncpgDriver` (asyncpg is
PgQueuer's fastest driver), `Queries.enqueue` with lists for bulk enqueue, and a `PgQueuer` app
whose `run()` waits on LISTEN/NOTIFY. The worker runs on uvloop, as `pgq run` does.

Concurrency: `max_concurrent_tasks` is PgQueuer's per-worker cap on picked jobs and must be at
least twice `batch_size`, so a worker of concurrency C runs with `max_concurrent_tasks=C` and
`batch_size=C // 2`. The cluster-wide limit is the entrypoint's `concurrency_limit`, which
PgQueuer enforces in the database across all workers.

A finished job is deleted from the `pgqueuer` table and logged as `successful` in
`pgqueuer_log`; that log row is the committed completion the orchestrator counts.
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pgqueuer
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
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries


def _payload(i: int) -> bytes:
    return json.dumps(payload_for(i)).encode()


async def setup(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()
    return {"installed": True}


async def enqueue_bulk(dsn: str, n: int, batch: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        t0 = time.perf_counter()
        for first in range(0, n, batch):
            count = min(n, first + batch) - first
            await queries.enqueue(
                [JOB_TYPE] * count,
                [_payload(i) for i in range(first, first + count)],
                [0] * count,
            )
        seconds = time.perf_counter() - t0
    finally:
        await conn.close()
    return {"n": n, "seconds": seconds}


async def enqueue_single(dsn: str, n: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        t0 = time.perf_counter()
        for i in range(n):
            await queries.enqueue(JOB_TYPE, _payload(i))
        seconds = time.perf_counter() - t0
    finally:
        await conn.close()
    return {"n": n, "seconds": seconds}


async def produce(dsn: str, n: int, rate: float, out: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))

        async def send(i: int) -> None:
            await queries.enqueue(JOB_TYPE, _payload(i))

        sent = await paced(n, rate, send)
    finally:
        await conn.close()
    write_json(out, {"sent": sent})
    return {"n": n, "seconds": sent[-1] - sent[0] if sent else 0.0}


def _batch_size(concurrency: int) -> int:
    return max(1, concurrency // 2)


def _index(payload: Any) -> int:
    return int(json.loads(payload)["i"])


async def worker(dsn: str, concurrency: int, limit: int, out: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    pgq = PgQueuer(AsyncpgDriver(conn))
    starts: list[tuple[float, Any]] = []

    @pgq.entrypoint(JOB_TYPE, concurrency_limit=limit)
    async def body(job: Job) -> None:
        starts.append((time.time(), job.payload))

    stop = stop_event()
    rss_ready = rss_now_mb()
    t_start = time.time()
    run = asyncio.create_task(
        pgq.run(batch_size=_batch_size(concurrency), max_concurrent_tasks=concurrency)
    )
    announce_ready(t_start)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if run.done():
        stopper.cancel()
        await run
        fail("the PgQueuer worker stopped by itself")
    pgq.shutdown.set()
    await run
    await conn.close()
    write_worker_report(
        out, t_start=t_start, starts=starts, decode=_index, extra={"rss_ready_mb": rss_ready}
    )
    return {"executed": len(starts)}


async def explain_claim(dsn: str, concurrency: int, limit: int, repeat: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE the dequeue statement PgQueuer builds for this worker, rolled back."""
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        query = queries.qbq.build_dequeue_query(
            batch_size=_batch_size(concurrency),
            entrypoints=[JOB_TYPE],  # type: ignore[list-item]
            concurrency_limits=[limit],
            queue_manager_id=uuid.uuid4(),  # type: ignore[arg-type]
            global_concurrency_limit=concurrency,
            heartbeat_timeout=timedelta(seconds=30),
        )
        execution: list[float] = []
        planning: list[float] = []
        plan_text = ""
        for attempt in range(repeat + 1):
            tx = conn.transaction()
            await tx.start()
            try:
                if attempt == repeat:
                    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + query.sql, *query.args)
                    plan_text = "\n".join(r[0] for r in rows)
                else:
                    raw = await conn.fetchval(
                        "EXPLAIN (ANALYZE, FORMAT JSON) " + query.sql, *query.args
                    )
                    doc = json.loads(raw) if isinstance(raw, str) else raw
                    execution.append(float(doc[0]["Execution Time"]))
                    planning.append(float(doc[0]["Planning Time"]))
            finally:
                await tx.rollback()
    finally:
        await conn.close()
    return {
        "query": "PgQueuer dequeue (QueryQueueBuilder.build_dequeue_query)",
        "execution_ms": execution,
        "planning_ms": planning,
        "median_ms": statistics.median(execution),
        "plan": plan_text,
    }


def versions() -> dict[str, Any]:
    import uvloop

    return {
        "pgqueuer": pgqueuer.__version__,
        "asyncpg": asyncpg.__version__,
        "uvloop": uvloop.__version__,
        "python": platform.python_version(),
        "event_loop": "uvloop (worker, as `pgq run`); asyncio (producers)",
    }


def main() -> None:
    parser, _ = base_parser("PgQueuer benchmark adapter")
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
        import uvloop

        emit(uvloop.run(worker(args.dsn, args.concurrency, args.limit, args.out)))
    elif cmd == "explain-claim":
        emit(asyncio.run(explain_claim(args.dsn, args.concurrency, args.limit, args.repeat)))
    else:  # pragma: no cover - argparse refuses unknown commands
        fail(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
