"""A jobyard worker for the chaos suite: `python -m tests.chaos.node SPEC_JSON`.

SPEC keys: url, slot, node_id, types (executors to register), limits, config (Config fields),
store_options (keyword arguments of open_store), evidence (write evidence rows; PostgreSQL
only), faketime (the offset this process runs under, for the record). Failpoints come from
JOBYARD_FAILPOINTS, as for any jobyard process.

Evidence, all stamped by the database clock (see tests/chaos/schema.py):
- chaos_evidence: one row per run of an executor. The start is inserted, and the end updated,
  each in its own autocommit statement, awaited before the work starts and after it ends; so a
  process killed in between leaves an open interval.
- chaos_terms: every election or renewal this node wins (`Dispatcher.on_leadership`), with the
  interval it trusts the term, its resignation, and the instant it stops believing it leads.
- chaos_maint: every maintenance pass, and every maintenance statement the leader issues, with
  whether the node believed it led at that instant.
- chaos_applied: every result the database accepted (the fenced completion returned its id).

Executors: work, bulk, backlog (sleep `ms`), slow (sleeps past its timeout: cancelled), spin (a
sync executor that burns CPU for `ms`, ignoring `ctx.cancelled`), suicide (SIGKILLs its own
process), typed (validates its payload with a pydantic model; a misfit is a PermanentError).

SIGUSR1 arms a stop in the middle of the next maintenance pass: the process SIGSTOPs itself
inside the pass, right before its `fail_stale_jobs` statement, so the fault driver can wake a
leader that was frozen with a pass half done. Every successful heartbeat is recorded too
(chaos_maint, what = heartbeat), so the checker knows when a node could be presumed dead.

The instrumentation wraps public store methods on this process's own store objects, and the
dispatcher module's `run_maintenance` (the only way to see a pass begin and end): it observes,
and changes nothing the engine does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

import jobyard.dispatcher.dispatcher as dispatcher_module
from jobyard import Config, Dispatcher, Job, JobContext, Limits, PermanentError, Queue, open_store
from jobyard.dispatcher.dispatcher import new_node_id
from jobyard.dispatcher.maintenance import MaintenanceReport, run_maintenance
from jobyard.node import run_node
from jobyard.store.ports import Store
from jobyard.store.records import JobResult, LeaderTerm
from tests.chaos.schema import TypedPayload

log = logging.getLogger("chaos.node")

EVIDENCE_RETRY_S = 30.0

START_SQL = (
    "INSERT INTO chaos_evidence (job, attempt, node, pid, type, started_at) "
    "VALUES (%(job)s, %(attempt)s, %(node)s, %(pid)s, %(type)s, clock_timestamp()) "
    "ON CONFLICT DO NOTHING"
)
END_SQL = (
    "UPDATE chaos_evidence SET ended_at = clock_timestamp(), outcome = %(outcome)s "
    "WHERE job = %(job)s AND attempt = %(attempt)s AND node = %(node)s AND ended_at IS NULL"
)
TERM_SQL = (
    "INSERT INTO chaos_terms (node, pid, elected_at, expires_at, seen_at, trust_until, kind) "
    "VALUES (%(node)s, %(pid)s, %(elected_at)s, %(expires_at)s, "
    "clock_timestamp() + make_interval(secs => %(seen)s), "
    "clock_timestamp() + make_interval(secs => %(until)s), %(kind)s)"
)
MAINT_SQL = (
    "INSERT INTO chaos_maint (node, pid, what, at, ended_at, believed, detail) "
    "VALUES (%(node)s, %(pid)s, %(what)s, clock_timestamp() + make_interval(secs => %(at)s), "
    "clock_timestamp() + make_interval(secs => %(end)s), %(leading)s, %(detail)s)"
)
APPLIED_SQL = (
    "INSERT INTO chaos_applied (job, attempt, node, outcome, at) "
    "VALUES (%(job)s, %(attempt)s, %(node)s, %(outcome)s, "
    "clock_timestamp() + make_interval(secs => %(at)s)) ON CONFLICT DO NOTHING"
)
NODE_SQL = (
    "INSERT INTO chaos_nodes (node, pid, slot, started_at, host_skew, faketime) "
    "VALUES (%(node)s, %(pid)s, %(slot)s, clock_timestamp(), "
    "%(host)s - extract(epoch FROM clock_timestamp()), %(faketime)s) ON CONFLICT DO NOTHING"
)
MAINTENANCE_CALLS = ("rescue_orphaned_jobs", "fail_stale_jobs", "delete_dead_nodes", "prune_jobs")


class Recorder:
    """Evidence that must not slow the engine: written in order by a thread of its own.

    Each item is a statement, its parameters, and monotonic instants that become offsets from
    the database clock at the moment of writing, so a node under faketime (or frozen with
    SIGSTOP, with items still queued) is stamped correctly. A failed write is retried until it
    succeeds; the queue is lost only with the process.
    """

    def __init__(self, url: str, app: str) -> None:
        self._url = url
        self._app = app
        self._items: queue.Queue[tuple[str, dict[str, Any], dict[str, float]] | None] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._run, name="chaos-recorder", daemon=True)
        self._thread.start()

    def put(self, sql: str, params: dict[str, Any], instants: dict[str, float]) -> None:
        self._items.put((sql, params, instants))

    def close(self, timeout: float = 5.0) -> None:
        self._items.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            item = self._items.get()
            if item is None:
                break
            sql, params, instants = item
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(
                            self._url,
                            autocommit=True,
                            application_name=self._app,
                            connect_timeout=5,
                        )
                    now = time.monotonic()
                    conn.execute(sql, {**params, **{k: v - now for k, v in instants.items()}})
                    break
                except psycopg.OperationalError:  # the database is away: wait for it
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.2)
                except psycopg.Error:  # a bad row: drop it, or it would block all the rest
                    log.exception("evidence row dropped: %s %r", sql, params)
                    break
        if conn is not None:
            conn.close()


class JobEvidence:
    """Job starts and ends: awaited, one autocommit statement each, retried while the
    database is away (a restart) for up to EVIDENCE_RETRY_S."""

    def __init__(self, url: str, node: str, app: str) -> None:
        self._url = url
        self._node = node
        self._app = app
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=4,
            open=False,
            kwargs={"autocommit": True, "application_name": app},
        )
        self._local = threading.local()

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    def _params(self, job: Job, outcome: str | None = None) -> dict[str, Any]:
        return {
            "job": job.id,
            "attempt": job.attempt,
            "node": self._node,
            "pid": os.getpid(),
            "type": job.type,
            "outcome": outcome,
        }

    async def _exec(self, sql: str, params: dict[str, Any]) -> None:
        deadline = time.monotonic() + EVIDENCE_RETRY_S
        while True:
            try:
                async with self._pool.connection(timeout=5) as conn:
                    await conn.execute(sql, params)
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def start(self, job: Job) -> None:
        await self._exec(START_SQL, self._params(job))

    async def end(self, job: Job, outcome: str) -> None:
        await self._exec(END_SQL, self._params(job, outcome))

    def _exec_sync(self, sql: str, params: dict[str, Any]) -> None:
        deadline = time.monotonic() + EVIDENCE_RETRY_S
        while True:
            conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        self._url, autocommit=True, application_name=self._app, connect_timeout=5
                    )
                    self._local.conn = conn
                conn.execute(sql, params)
                return
            except psycopg.OperationalError:
                self._local.conn = None
                if conn is not None:
                    conn.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def start_sync(self, job: Job) -> None:
        self._exec_sync(START_SQL, self._params(job))

    def end_sync(self, job: Job, outcome: str) -> None:
        self._exec_sync(END_SQL, self._params(job, outcome))


AsyncBody = Callable[[JobContext, Job], Awaitable[None]]


def trace_heartbeats(
    store: Store, recorder: Recorder, node: str, pid: int, leading: list[bool]
) -> None:
    """Record every successful heartbeat (the instant it began), so the checker knows when a
    node's registration could have expired. The dispatcher makes its heartbeat store with
    `store.for_role("heartbeat")` when it is built: wrap that, before it is built."""
    real_for_role = store.for_role

    def for_role(role: str) -> Store:
        twin = real_for_role(role)
        if role != "heartbeat":
            return twin
        real_beat = twin.heartbeat_node

        async def heartbeat_node(info: Any, lease: Any, *, now: Any = None) -> Any:
            began = time.monotonic()
            result = await real_beat(info, lease, now=now)
            recorder.put(
                MAINT_SQL,
                {
                    "node": node,
                    "pid": pid,
                    "what": "heartbeat",
                    "leading": leading[0],
                    "detail": None,
                },
                {"at": began, "end": time.monotonic()},
            )
            return result

        vars(twin)["heartbeat_node"] = heartbeat_node
        return twin

    vars(store)["for_role"] = for_role


def main() -> None:
    spec = json.loads(sys.argv[1])
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [{os.getpid()}] %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(run(spec))


async def run(spec: dict[str, Any]) -> None:
    url: str = spec["url"]
    pid = os.getpid()
    config = Config(**spec.get("config", {}))
    store = open_store(url, **spec.get("store_options", {}))
    queue_ = Queue(store, config=config)
    with_evidence = bool(spec.get("evidence")) and url.startswith("postgres")
    node = config.node_id or new_node_id()

    ev: JobEvidence | None = None
    rec: Recorder | None = None
    watcher: asyncio.Task[None] | None = None
    leading = [False]  # what the dispatcher believes, for the heartbeat records
    if with_evidence:
        ev = JobEvidence(url, node, f"chaos:{spec['slot']}:evidence")
        await ev.open()
        rec = Recorder(url, f"chaos:{spec['slot']}:recorder")
        rec.put(
            NODE_SQL,
            {
                "node": node,
                "pid": pid,
                "slot": spec["slot"],
                "host": time.time(),
                "faketime": spec.get("faketime"),
            },
            {},
        )
        trace_heartbeats(store, rec, node, pid, leading)
    dispatcher = Dispatcher(
        config.model_copy(update={"node_id": node}),
        store,
        queue_,
        Limits(spec.get("limits", {})),
    )

    # -- executors -------------------------------------------------------------------------
    def evidenced(body: AsyncBody) -> AsyncBody:
        if ev is None:
            return body

        async def run_with_evidence(ctx: JobContext, job: Job) -> None:
            assert ev is not None
            await ev.start(job)
            outcome = "error"
            try:
                await body(ctx, job)
                outcome = "ok"
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except PermanentError:
                outcome = "invalid"
                raise
            finally:
                await ev.end(job, outcome)

        return run_with_evidence

    async def sleep_ms(ctx: JobContext, job: Job) -> None:
        await asyncio.sleep(float(job.payload.get("ms", 20)) / 1000)

    async def suicide(ctx: JobContext, job: Job) -> None:
        log.warning("job %d (suicide) kills its own process %d", job.id, pid)
        logging.shutdown()
        os.kill(pid, signal.SIGKILL)

    async def typed(ctx: JobContext, job: Job) -> None:
        try:
            payload = TypedPayload.model_validate(job.payload)
        except ValidationError as exc:
            raise PermanentError(
                f"payload does not fit TypedPayload ({exc.error_count()} errors)"
            ) from None
        await asyncio.sleep(0.01 + payload.n / 1e6)

    def spin(ctx: JobContext, job: Job) -> None:
        # A CPU-bound sync executor that ignores ctx.cancelled: it overruns its timeout.
        if ev is not None:
            ev.start_sync(job)
        until = time.monotonic() + float(job.payload.get("ms", 2000)) / 1000
        n = 0
        while time.monotonic() < until:
            n += 1
        if ev is not None:
            ev.end_sync(job, "ok")

    executors: dict[str, Any] = {
        "work": evidenced(sleep_ms),
        "bulk": evidenced(sleep_ms),
        "backlog": evidenced(sleep_ms),
        "slow": evidenced(sleep_ms),
        "suicide": evidenced(suicide),
        "typed": evidenced(typed),
        "spin": spin,
    }
    for job_type in spec["types"]:
        dispatcher.register_executor(job_type, executors[job_type])

    # -- instrumentation -------------------------------------------------------------------
    if rec is not None:
        recorder = rec

        def on_term(term: LeaderTerm | None, trust_until: float) -> None:
            now = time.monotonic()
            recorder.put(
                TERM_SQL,
                {
                    "node": node,
                    "pid": pid,
                    "elected_at": None if term is None else term.elected_at,
                    "expires_at": None if term is None else term.expires_at,
                    "kind": "resign" if term is None else "term",
                },
                {"seen": now, "until": trust_until if term is not None else now},
            )

        dispatcher.on_leadership(on_term)

        async def watch_stepdown() -> None:
            # on_leadership reports wins and resignations; a node also stops leading when a
            # renewal is refused or its trust runs out. Look every 10 ms (the belief is
            # overstated by at most that, which only makes the overlap check stricter).
            was = False
            while True:
                now_leading = leading[0] = dispatcher.is_leader
                if was and not now_leading:
                    now = time.monotonic()
                    recorder.put(
                        TERM_SQL,
                        {
                            "node": node,
                            "pid": pid,
                            "elected_at": None,
                            "expires_at": None,
                            "kind": "stepdown",
                        },
                        {"seen": now, "until": now},
                    )
                was = now_leading
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch_stepdown(), name="chaos-stepdown")

        real_pass = run_maintenance

        async def traced_pass(
            store_: Store,
            config_: Config,
            still_leader: Callable[[], bool] = lambda: True,
            **kwargs: Any,
        ) -> MaintenanceReport:
            began, believed = time.monotonic(), dispatcher.is_leader
            detail: dict[str, Any] = {}
            try:
                report = await real_pass(store_, config_, still_leader, **kwargs)
                detail = {
                    "rescued": report.rescued,
                    "rescued_failed": report.rescued_failed,
                    "stale_failed": report.stale_failed,
                    "dead_nodes": report.dead_nodes,
                }
                return report
            except BaseException as exc:
                detail = {"error": repr(exc)}
                raise
            finally:
                recorder.put(
                    MAINT_SQL,
                    {
                        "node": node,
                        "pid": pid,
                        "what": "pass",
                        "leading": believed,
                        "detail": json.dumps(detail),
                    },
                    {"at": began, "end": time.monotonic()},
                )

        # The dispatcher calls run_maintenance through its module's namespace: trace it there.
        vars(dispatcher_module)["run_maintenance"] = traced_pass
        stop_armed = threading.Event()

        def trace_call(name: str) -> None:
            real = getattr(store, name)

            async def traced(*args: Any, **kwargs: Any) -> Any:
                if name == "fail_stale_jobs" and stop_armed.is_set():
                    stop_armed.clear()
                    log.warning("SIGSTOP in the middle of a maintenance pass (armed)")
                    recorder.put(
                        MAINT_SQL,
                        {
                            "node": node,
                            "pid": pid,
                            "what": "midpass-stop",
                            "leading": dispatcher.is_leader,
                            "detail": None,
                        },
                        {"at": time.monotonic(), "end": time.monotonic()},
                    )
                    os.kill(pid, signal.SIGSTOP)
                began, believed = time.monotonic(), dispatcher.is_leader
                # Whether the statement carried the leader's term (its fence in SQL), and how
                # many rows it changed: what the checker needs to judge a statement sent by a
                # node that no longer believed it led.
                detail: dict[str, Any] = {"fenced": kwargs.get("term") is not None}
                try:
                    result = await real(*args, **kwargs)
                    if isinstance(result, int):
                        detail["changed"] = result
                    else:
                        detail["changed"] = result.retried + result.failed
                    return result
                finally:
                    recorder.put(
                        MAINT_SQL,
                        {
                            "node": node,
                            "pid": pid,
                            "what": name,
                            "leading": believed,
                            "detail": json.dumps(detail),
                        },
                        {"at": began, "end": time.monotonic()},
                    )

            setattr(store, name, traced)

        for name in MAINTENANCE_CALLS:
            trace_call(name)

        def record_applied(results: Any, applied: set[int]) -> None:
            at = time.monotonic()
            for result in results:
                assert isinstance(result, JobResult)
                if result.job_id in applied:
                    recorder.put(
                        APPLIED_SQL,
                        {
                            "job": result.job_id,
                            "attempt": result.attempt,
                            "node": result.owner,
                            "outcome": result.outcome.value,
                        },
                        {"at": at},
                    )

        real_complete = store.complete_jobs

        async def traced_complete(results: Any, *, now: Any = None) -> set[int]:
            applied = await real_complete(results, now=now)
            record_applied(results, applied)
            return applied

        store.complete_jobs = traced_complete  # type: ignore[method-assign]
        # Newer engines record results and claim in one call: trace that too, when it exists.
        # The dispatcher runs its cycles on its claim store (its own connection on PostgreSQL).
        cycling = getattr(dispatcher, "claim_store", store)
        real_cycle = getattr(cycling, "complete_and_claim", None)
        if real_cycle is not None:

            async def traced_cycle(results: Any, params: Any) -> Any:
                applied, jobs = await real_cycle(results, params)
                record_applied(results, applied)
                return applied, jobs

            vars(cycling)["complete_and_claim"] = traced_cycle
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stop_armed.set)

    log.info("chaos node %s (pid %d, slot %s) starting", node, pid, spec.get("slot"))
    try:
        await run_node(dispatcher)
    finally:
        log.info("chaos node %s stopped", node)
        if watcher is not None:
            watcher.cancel()
        if ev is not None:
            await ev.close()
        if rec is not None:
            rec.close()
        await store.close()


if __name__ == "__main__":
    main()
