"""The chaos harness: three supervised worker processes, a producer, a fault driver.

`ChaosRun(pg, profile, workdir).run()` drives one scenario on a private PostgreSQL cluster and
returns what the checker needs; `sqlite_kills(...)` is the SQLite scenario. Everything here
uses real processes and real signals, and only ever signals processes it started itself (by
their pid, never by name).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import psycopg

from jobyard import Config, Queue, open_store
from tests.chaos.checker import Applied, Death, Fault, JobRow, Maint, Run, RunData, Term
from tests.chaos.pgcluster import PrivatePostgres
from tests.chaos.profiles import Profile
from tests.chaos.schema import EVIDENCE_DDL, TypedPayload

T = TypeVar("T")

ROOT: Final = Path(__file__).resolve().parents[2]
TYPES: Final = ("work", "bulk", "backlog", "slow", "spin", "suicide", "typed")
LIMITS: Final = {"work": 4, "slow": 2, "spin": 1, "suicide": 1, "typed": 2}
TIMEOUTS: Final = {"slow": 1.0, "spin": 1.0}
BY_DESIGN: Final = {
    "slow": "outlives its timeout (cancelled at the deadline)",
    "spin": "overruns its timeout in a thread",
    "suicide": "kills its own process",
    "typed": "some payloads cannot be decoded",
}
THROUGHPUT_TYPES: Final = frozenset({"work", "bulk"})
ROLES: Final = ("listener", "leader", "worker", "claim", "heartbeat")
WORKLOAD_ATTEMPTS: Final = 5


def node_config(profile: Profile) -> dict[str, Any]:
    """The same Config for every node (the guarantees ask for it)."""
    return {
        "heartbeat_interval": profile.heartbeat,
        "leader_lease_duration": profile.lease,
        "job_poll_interval": 0.5,
        "shutdown_grace_period": 0.5,
        "concurrency": 8,
        "job_timeouts": TIMEOUTS,
        "retry_backoff": 0.2,
        "retry_backoff_max": 1.0,
        "max_attempts": WORKLOAD_ATTEMPTS,
    }


def faketime_library() -> str | None:
    """libfaketime from Debian's `faketime` package (`make chaos` installs it), or None."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    return str(found[0]) if found else None


def _child_env(failpoints: str, faketime: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "FAKETIME")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["JOBYARD_FAILPOINTS"] = failpoints
    if faketime:
        library = faketime_library()
        if library is None:
            raise RuntimeError("faketime is not installed: apt-get install faketime")
        env["LD_PRELOAD"] = library
        env["FAKETIME"] = faketime
    return env


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat ('T' when stopped), or '' when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


# -- fault log -----------------------------------------------------------------------------
class FaultLog:
    """What the driver did and when (host clock = database clock on this machine)."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(
        self,
        kind: str,
        *,
        at: float | None = None,
        end: float | None = None,
        node: str | None = None,
        pid: int | None = None,
        **detail: Any,
    ) -> int:
        fault = Fault(kind, time.time() if at is None else at, end, node, pid, detail)
        with self._lock:
            self.faults.append(fault)
            return len(self.faults) - 1

    def finish(self, index: int, *, end: float | None = None, **detail: Any) -> Fault:
        with self._lock:
            old = self.faults[index]
            new = Fault(
                old.kind,
                old.at,
                time.time() if end is None else end,
                old.node,
                old.pid,
                {**old.detail, **detail},
            )
            self.faults[index] = new
            return new

    def dump(self, path: Path) -> None:
        with path.open("w") as f:
            for fault in self.faults:
                f.write(json.dumps(asdict(fault)) + "\n")


# -- supervisor ----------------------------------------------------------------------------
@dataclass(slots=True)
class Worker:
    slot: int
    node: str
    proc: subprocess.Popen[bytes]
    armed: bool
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


class Supervisor:
    """Keeps `slots` worker processes running: each one that ends is replaced by a fresh
    process (a new node id) after `respawn_delay`, until `stop()`."""

    def __init__(
        self,
        spec: dict[str, Any],
        workdir: Path,
        *,
        slots: int = 3,
        faketime: dict[int, str] | None = None,
        store_options: dict[int, dict[str, Any]] | None = None,
        respawn_delay: float = 0.2,
    ) -> None:
        self.spec = spec
        self.store_options = store_options or {}
        self.workdir = workdir
        self.slots = slots
        self.faketime = faketime or {}
        self.respawn_delay = respawn_delay
        self.failpoints = ""
        self.current: dict[int, Worker] = {}
        self.history: list[Worker] = []
        self.deaths: list[Death] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for slot in range(self.slots):
            thread = threading.Thread(target=self._keep, args=(slot,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _spawn(self, slot: int, generation: int) -> Worker:
        node = f"s{slot}g{generation}-{secrets.token_hex(2)}"
        faketime = self.faketime.get(slot)
        spec = {**self.spec, "slot": slot, "node_id": node, "faketime": faketime}
        spec["store_options"] = self.store_options.get(slot, {})
        spec["config"] = {**spec.get("config", {}), "node_id": node}
        log = (self.workdir / f"{node}.log").open("wb")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.node", json.dumps(spec)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_child_env(self.failpoints, faketime),
            )
        finally:
            log.close()
        return Worker(slot, node, proc, bool(self.failpoints), time.time())

    def _keep(self, slot: int) -> None:
        generation = 0
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                generation += 1
                worker = self._spawn(slot, generation)
                self.current[slot] = worker
                self.history.append(worker)
            code = worker.proc.wait()
            at = time.time()
            with self._lock:
                self.deaths.append(
                    Death(slot, worker.node, worker.pid, at, code, final=self._stopping.is_set())
                )
            if self._stopping.wait(self.respawn_delay):
                return

    def alive(self) -> list[Worker]:
        with self._lock:
            return [w for w in self.current.values() if w.alive()]

    def by_node(self, node: str) -> Worker | None:
        with self._lock:
            return next((w for w in self.history if w.node == node and w.alive()), None)

    def stop(self, timeout: float = 20.0) -> None:
        with self._lock:
            self._stopping.set()
            workers = [w for w in self.current.values() if w.alive()]
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGCONT)
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in workers:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
        for thread in self._threads:
            thread.join(5)

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for path in sorted(self.workdir.glob("s*g*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name}\n{text[-tail:]}")
        return "\n".join(parts)


# -- producer ------------------------------------------------------------------------------
class Producer:
    """Enqueues a steady mix through jobyard's async Queue, in an event loop of its own, and
    remembers every acknowledged id. Also the driver's way to enqueue special jobs."""

    def __init__(self, url: str, rate: dict[str, int], *, tick: float = 0.1) -> None:
        self.url = url
        self.rate = rate
        self.tick = tick
        self.acked: set[int] = set()
        self.failures = 0
        self.loop = asyncio.new_event_loop()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._producing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="chaos-producer")
        self._queue: Queue | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the producer did not start")

    def produce(self, on: bool) -> None:
        (self._producing.set if on else self._producing.clear)()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        store = open_store(self.url, node_name="producer", max_size=4)
        queue = Queue(store, config=Config(max_attempts=WORKLOAD_ATTEMPTS))
        for job_type in TYPES:
            queue.declare(job_type, TypedPayload if job_type == "typed" else None)
        self._queue = queue
        self._ready.set()
        rng = random.Random(1)
        owed = dict.fromkeys(self.rate, 0.0)
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                if self._producing.is_set():
                    for job_type, per_second in self.rate.items():
                        owed[job_type] += per_second * self.tick
                        n = int(owed[job_type])
                        if n <= 0:
                            continue
                        owed[job_type] -= n
                        if job_type == "work":
                            payloads = [{"ms": rng.randint(20, 80)} for _ in range(n)]
                        else:
                            payloads = [{"ms": 5}] * n
                        await self._enqueue(job_type, payloads, None, 5.0, count_failure=True)
                next_tick += self.tick
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
                if time.monotonic() - next_tick > 5:
                    next_tick = time.monotonic()  # fell behind (a restart): do not burst
        finally:
            await store.close()

    async def _enqueue(
        self,
        job_type: str,
        payloads: list[Any],
        max_attempts: int | None,
        limit_s: float,
        *,
        count_failure: bool = False,
    ) -> list[int]:
        assert self._queue is not None
        try:
            jobs = await asyncio.wait_for(
                self._queue.enqueue_many(job_type, payloads, max_attempts=max_attempts), limit_s
            )
        except Exception:
            if count_failure:
                self.failures += 1
                return []
            raise
        ids = [job.id for job in jobs]
        with self._lock:
            self.acked.update(ids)
        return ids

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def enqueue(
        self,
        job_type: str,
        payloads: list[Any],
        *,
        max_attempts: int | None = None,
        timeout: float = 60.0,
    ) -> list[int]:
        """Enqueue from the driver's thread, retrying while the database is away."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.call(
                    self._enqueue(job_type, payloads, max_attempts, limit_s=30.0), timeout + 5
                )
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


# -- the PostgreSQL scenario ---------------------------------------------------------------
@dataclass(slots=True)
class Outcome:
    data: RunData
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


class ChaosRun:
    def __init__(self, pg: PrivatePostgres, profile: Profile, workdir: Path) -> None:
        self.pg = pg
        self.profile = profile
        self.workdir = workdir
        self.rng = random.Random(profile.seed)
        self.db = f"chaos_{uuid.uuid4().hex[:10]}"
        self.url = pg.url(self.db)
        self.log = FaultLog()
        self.supervisor = Supervisor(
            {
                "url": self.url,
                "types": list(TYPES),
                "limits": LIMITS,
                "config": node_config(profile),
                "evidence": True,
            },
            workdir,
            faketime=profile.faketime,
            # Slot 0 runs with fast transitions (claims, results and heartbeats committed
            # without waiting for the disk): the crash restarts can undo them.
            store_options={0: {"fast_transitions": True}} if profile.fast_transitions else None,
        )
        self.producer = Producer(self.url, profile.rate)
        self.timings: dict[str, float] = {}
        self.notes: dict[str, Any] = {}
        self.invalid_jobs: set[int] = set()
        self.poison_window: tuple[float, float] | None = None
        self.baseline = (0.0, 0.0)
        self.run_end = 0.0
        self.load_end = 0.0

    # -- database access for the driver ----------------------------------------------------
    def sql(self, query: str, params: Any = None, *, retry_s: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + retry_s
        while True:
            try:
                with psycopg.connect(
                    self.url, autocommit=True, connect_timeout=5, application_name="chaos:driver"
                ) as conn:
                    cur = conn.execute(query, params)
                    return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def setup(self) -> None:
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.db}")
        self.sql(EVIDENCE_DDL)

        async def migrate() -> None:
            store = open_store(self.url, min_size=1, max_size=1)
            await store.migrate()
            await store.close()

        asyncio.run(migrate())

    def leader(self, within: float = 10.0, other_than: str | None = None) -> Worker | None:
        """The live worker that holds the lease (by the database), waiting for one."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            rows = self.sql(
                "SELECT leader_id FROM jobyard_leader WHERE expires_at > clock_timestamp()"
            )
            if rows and rows[0][0] != other_than:
                worker = self.supervisor.by_node(rows[0][0])
                if worker is not None:
                    return worker
            time.sleep(0.05)
        return None

    def live_nodes(self) -> int:
        rows = self.sql("SELECT count(*) FROM jobyard_nodes WHERE expires_at > clock_timestamp()")
        return int(rows[0][0])

    def up_or_gone(self, worker: Worker) -> bool:
        """The worker has registered (its signal handlers are installed), or it is dead."""
        registered = self.sql("SELECT 1 FROM jobyard_nodes WHERE node_id = %s", (worker.node,))
        return bool(registered) or not worker.alive()

    def wait(self, check: Callable[[], bool], within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.05)
        return False

    def sleep_until(self, t: float) -> None:
        time.sleep(max(0.0, t - time.time()))

    # -- faults ----------------------------------------------------------------------------
    def kill(self, worker: Worker, kind: str, **detail: Any) -> int:
        index = self.log.add(kind, node=worker.node, pid=worker.pid, **detail)
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signal.SIGKILL)
        return index

    def random_worker(self, min_age: float = 0.0) -> Worker | None:
        candidates = [w for w in self.supervisor.alive() if time.time() - w.started >= min_age]
        return self.rng.choice(candidates) if candidates else None

    def phase_random_kills(self) -> None:
        p = self.profile
        self.supervisor.failpoints = p.failpoints
        last = time.time()
        for _ in range(p.random_kills):
            worker = self.random_worker()
            if worker is not None:
                self.kill(worker, "kill")
                last = time.time()
            time.sleep(p.kill_every_s)
        # Disarm: workers respawned meanwhile carry failpoints; roll them (SIGTERM, a clean
        # stop that hands running jobs back) so the next phases start with clean processes.
        self.supervisor.failpoints = ""
        for worker in self.supervisor.alive():
            if worker.armed and worker.alive():
                # A process that has not installed its signal handlers yet would just die.
                self.wait(functools.partial(self.up_or_gone, worker), 10)
                self.log.add("roll", node=worker.node, pid=worker.pid)
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
                try:
                    worker.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.kill(worker, "kill")
                last = time.time()
        self.wait(lambda: not any(w.armed for w in self.supervisor.alive()), 10)
        self.sleep_until(last + p.gap)

    def phase_leader_kills(self) -> None:
        for _ in range(self.profile.leader_kills):
            worker = self.leader()
            if worker is None:
                self.notes.setdefault("skipped", []).append("kill-leader: no leader")
                continue
            index = self.kill(worker, "kill-leader")
            at = self.log.faults[index].at
            self.leader(
                within=self.profile.lease + self.profile.heartbeat + 5, other_than=worker.node
            )
            self.sleep_until(at + self.profile.gap)

    def _stop_leader(self, variant: str) -> None:
        p = self.profile
        worker = self.leader()
        if worker is None:
            self.notes.setdefault("skipped", []).append(f"stop-leader ({variant}): no leader")
            return
        if variant == "midpass":
            worker.proc.send_signal(signal.SIGUSR1)
            if not self.wait(lambda: process_state(worker.pid) == "T", 3 * p.heartbeat + 1):
                variant = "midpass-missed"
                worker.proc.send_signal(signal.SIGSTOP)
        else:
            worker.proc.send_signal(signal.SIGSTOP)
        at = time.time()
        index = self.log.add(
            "stop-leader", at=at, node=worker.node, pid=worker.pid, variant=variant
        )
        time.sleep(2 * p.lease)
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signal.SIGCONT)
        self.log.finish(index)
        self.sleep_until(max(at + p.gap, time.time() + 2 * p.heartbeat))

    def phase_stops(self) -> None:
        for _ in range(self.profile.plain_stops):
            self._stop_leader("plain")
        for _ in range(self.profile.midpass_stops):
            self._stop_leader("midpass")

    def phase_pg_restarts(self) -> None:
        for mode in self.profile.pg_restarts:
            began, ready = self.pg.restart(mode)
            self.log.add(f"pg-restart-{mode}", at=began, end=ready)
            self.sleep_until(ready + self.profile.gap)

    def _backends(self, app: str) -> list[int]:
        rows = self.sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s",
            (app,),
        )
        return [int(r[0]) for r in rows]

    def _replaced(self, app: str, old: list[int]) -> bool:
        return bool(set(self._backends(app)) - set(old))

    def phase_connections(self) -> None:
        p = self.profile
        for _ in range(p.terminate_rounds):
            for role in ROLES:
                started = time.time()
                worker = self.leader() if role == "leader" else self.random_worker(min_age=3)
                if worker is None:
                    continue
                app = f"jobyard:{worker.node}:{role}"[:63]
                old = self._backends(app)
                at = time.time()
                for pid in old:
                    self.sql("SELECT pg_terminate_backend(%s)", (pid,))
                reconnect: float | None = None
                if old and self.wait(functools.partial(self._replaced, app, old), 2 * p.lease + 2):
                    reconnect = round(time.time() - at, 3)
                self.log.add(
                    f"terminate-{role}",
                    at=at,
                    node=worker.node,
                    pid=worker.pid,
                    backends=len(old),
                    reconnect_s=reconnect,
                )
                self.sleep_until(started + 2.0)

    def enqueue_timeouts(self) -> None:
        n = self.profile.timeout_jobs
        slow = self.producer.enqueue("slow", [{"ms": 5000}] * n, max_attempts=2)
        spin = self.producer.enqueue("spin", [{"ms": 2000}] * n, max_attempts=2)
        self.log.add("timeouts", slow=slow, spin=spin)

    def phase_poison(self) -> None:
        p = self.profile
        t0 = time.time()
        suicide = self.producer.enqueue("suicide", [{}] * p.suicide_jobs, max_attempts=2)
        good = self.producer.enqueue("typed", [{"n": i, "label": "fine"} for i in range(2)])
        bad_payloads = [
            {"n": "seven", "label": "a string where an int belongs"},
            {"label": "missing n"},
            {"n": 1, "label": "x", "extra": True},
            [1, 2, 3],
            {"n": 2**70, "label": None},
        ]
        invalid = []
        for i in range(p.invalid_jobs):
            payload = bad_payloads[i % len(bad_payloads)]
            rows = self.sql(
                "INSERT INTO jobyard_jobs (type, payload, max_attempts) "
                "VALUES ('typed', %s::jsonb, 3) RETURNING id",
                (json.dumps(payload),),
            )
            invalid.append(int(rows[0][0]))
        self.invalid_jobs.update(invalid)
        self.producer.acked.update(invalid)
        self.log.add("poison", at=t0, suicide=suicide, invalid=invalid, valid=good)
        ids = [*suicide, *invalid, *good]

        def done() -> bool:
            rows = self.sql(
                "SELECT count(*) FROM jobyard_jobs WHERE id = ANY(%s) "
                "AND status NOT IN ('completed', 'failed', 'cancelled')",
                (ids,),
            )
            return int(rows[0][0]) == 0

        self.wait(done, 4 * (p.lease + p.heartbeat) * max(1, p.suicide_jobs) + 10)
        self.poison_window = (t0, max(time.time(), t0 + 1))
        # The pills' last death may be seconds old: leave the load on long enough after it
        # for the recovery check to see the throughput come back.
        self.sleep_until(max(t0, self.last_death()) + p.gap)

    def last_death(self) -> float:
        return max((d.at for d in self.supervisor.deaths), default=0.0)

    def phase_backlog(self) -> None:
        """(8) Enqueue a backlog, then drain it while another session keeps a transaction
        open (its snapshot pins the MVCC horizon: nothing the drain leaves behind can be
        vacuumed). The transaction is closed after `long_tx_s`, and the drain goes on."""
        p = self.profile
        holder = psycopg.connect(self.url, application_name="chaos:long-transaction")
        released: float | None = None
        try:
            holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            holder.execute("SELECT count(*) FROM jobyard_jobs").fetchall()
            tx = self.log.add("long-transaction")
            t0 = time.time()
            ids: list[int] = []
            for start in range(0, p.backlog, 5000):
                n = min(5000, p.backlog - start)
                ids.extend(self.producer.enqueue("backlog", [{"ms": 0}] * n, timeout=120))
            enqueued = time.time()
            index = self.log.add("backlog", at=t0, jobs=len(ids))
            kills_at = [len(ids) * (k + 1) / (p.backlog_kills + 1) for k in range(p.backlog_kills)]
            marks: list[tuple[float, int]] = [(enqueued, 0)]
            remaining = len(ids)
            xmin_age = None
            while remaining and time.time() < enqueued + p.backlog_timeout_s:
                time.sleep(0.5)
                rows = self.sql(
                    "SELECT count(*) FROM jobyard_jobs WHERE type = 'backlog' "
                    "AND status IN ('pending', 'processing')"
                )
                remaining = int(rows[0][0])
                now = time.time()
                marks.append((now, len(ids) - remaining))
                while kills_at and len(ids) - remaining >= kills_at[0]:
                    kills_at.pop(0)
                    worker = self.random_worker()
                    if worker is not None:
                        self.kill(worker, "kill", during="backlog")
                if released is None and now - enqueued >= p.long_tx_s:
                    xmin_age = self.sql(
                        "SELECT age(backend_xmin) FROM pg_stat_activity "
                        "WHERE application_name = 'chaos:long-transaction'"
                    )
                    holder.rollback()
                    released = time.time()
                    self.log.finish(tx, end=released)
            finished = time.time()

            def rate(a: float, b: float) -> float | None:
                inside = [(t, d) for t, d in marks if a <= t <= b]
                if len(inside) < 2 or inside[-1][0] - inside[0][0] < 1:
                    return None
                return round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 1)

            held_until = released if released is not None else finished
            others = self.sql(
                "SELECT count(*) FROM chaos_evidence WHERE type IN ('work', 'bulk') "
                "AND outcome = 'ok' AND ended_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
                (enqueued, held_until),
            )
            summary = {
                "jobs": len(ids),
                "enqueue_s": round(enqueued - t0, 2),
                "drain_s": round(finished - enqueued, 2),
                "remaining": remaining,
                "long_transaction_s": round(held_until - t0, 1),
                "long_transaction_xmin_age": xmin_age[0][0] if xmin_age else None,
                "drained_while_held": next(d for t, d in reversed(marks) if t <= held_until),
                "rate_first_30s_per_s": rate(enqueued, enqueued + 30),
                "rate_last_30s_held_per_s": rate(held_until - 30, held_until),
                "rate_first_30s_released_per_s": None
                if released is None
                else rate(released, released + 30),
                "other_types_per_s_while_held": round(
                    int(others[0][0]) / max(1.0, held_until - enqueued), 1
                ),
            }
            self.log.finish(index, end=finished, **summary)
            self.notes["backlog"] = summary
        finally:
            if released is None:
                with contextlib.suppress(Exception):
                    holder.rollback()
            holder.close()

    def settle(self) -> bool:
        def quiet() -> bool:
            rows = self.sql(
                "SELECT count(*) FROM jobyard_jobs WHERE status IN ('pending', 'processing')"
            )
            return int(rows[0][0]) == 0

        return self.wait(quiet, self.profile.settle_timeout_s)

    # -- the scenario ----------------------------------------------------------------------
    def _timed(self, name: str, fn: Callable[[], None]) -> None:
        t0 = time.time()
        fn()
        self.timings[name] = round(time.time() - t0, 2)

    def run(self) -> Outcome:
        p = self.profile
        t_start = time.time()
        self._timed("setup", self.setup)
        self.supervisor.start()
        try:
            self.producer.start()
            if not self.wait(lambda: self.live_nodes() == 3, 30) or self.leader(20) is None:
                raise RuntimeError("the cluster did not come up:\n" + self.supervisor.logs())
            self.timings["cluster_up"] = round(time.time() - t_start, 2)
            self.producer.produce(True)
            time.sleep(p.warmup_s)
            b0 = time.time()
            time.sleep(p.baseline_s)
            self.baseline = (b0, time.time())
            self._timed("random_kills", self.phase_random_kills)
            self._timed("leader_kills", self.phase_leader_kills)
            self._timed("leader_stops", self.phase_stops)
            self._timed("pg_restarts", self.phase_pg_restarts)
            self.enqueue_timeouts()
            self._timed("terminate_backends", self.phase_connections)
            self._timed("poison", self.phase_poison)
            if p.backlog:
                self._timed("backlog", self.phase_backlog)
            self.producer.produce(False)
            self.load_end = settled = time.time()
            self.notes["settled"] = self.settle()
            self.timings["settle"] = round(time.time() - settled, 2)
            self.run_end = time.time()
        finally:
            self.producer.stop()
            self.supervisor.stop()
        self.timings["total"] = round(time.time() - t_start, 2)
        return Outcome(self.collect(), self.timings, self.notes)

    def collect(self) -> RunData:
        p = self.profile
        jobs = {
            int(r[0]): JobRow(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), r[5], r[6])
            for r in self.sql(
                "SELECT id, type, status, attempt, max_attempts, owner, error FROM jobyard_jobs"
            )
        }
        runs = [
            Run(int(r[0]), int(r[1]), r[2], int(r[3]), r[4], float(r[5]), _f(r[6]), r[7])
            for r in self.sql(
                "SELECT job, attempt, node, pid, type, extract(epoch FROM started_at)::float8, "
                "extract(epoch FROM ended_at)::float8, outcome FROM chaos_evidence"
            )
        ]
        terms = [
            Term(r[0], int(r[1]), r[2], r[3], _f(r[4]), float(r[5]), float(r[6]))
            for r in self.sql(
                "SELECT node, pid, kind, elected_at::text, extract(epoch FROM expires_at)::float8, "
                "extract(epoch FROM seen_at)::float8, extract(epoch FROM trust_until)::float8 "
                "FROM chaos_terms ORDER BY id"
            )
        ]
        maint = [
            Maint(r[0], int(r[1]), r[2], float(r[3]), _f(r[4]), bool(r[5]), r[6])
            for r in self.sql(
                "SELECT node, pid, what, extract(epoch FROM at)::float8, "
                "extract(epoch FROM ended_at)::float8, believed, detail FROM chaos_maint "
                "ORDER BY id"
            )
        ]
        applied = [
            Applied(int(r[0]), int(r[1]), r[2], r[3], float(r[4]))
            for r in self.sql(
                "SELECT job, attempt, node, outcome, extract(epoch FROM at)::float8 "
                "FROM chaos_applied"
            )
        ]
        self.notes["nodes"] = [
            {"node": r[0], "slot": r[1], "host_skew_s": round(float(r[2]), 1), "faketime": r[3]}
            for r in self.sql(
                "SELECT node, slot, host_skew, faketime FROM chaos_nodes ORDER BY started_at"
            )
        ]
        killed = {f.pid for f in self.log.faults if f.kind.startswith("kill")}
        faults = list(self.log.faults)
        for d in self.supervisor.deaths:
            if d.returncode == -9 and d.pid not in killed and not d.final:
                faults.append(Fault("self-kill", d.at, None, d.node, d.pid, {}))
        return RunData(
            lease=p.lease,
            heartbeat=p.heartbeat,
            limits=dict(LIMITS),
            jobs=jobs,
            runs=runs,
            terms=terms,
            maint=maint,
            applied=applied,
            faults=faults,
            deaths=list(self.supervisor.deaths),
            acked=set(self.producer.acked),
            baseline=self.baseline,
            throughput_types=THROUGHPUT_TYPES,
            by_design=dict(BY_DESIGN),
            poison_window=self.poison_window,
            invalid_jobs=frozenset(self.invalid_jobs),
            run_end=self.run_end or time.time(),
            load_end=self.load_end or self.run_end or time.time(),
        )


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


# -- the SQLite scenario -------------------------------------------------------------------
@dataclass(slots=True)
class SqliteResult:
    integrity_after_kills: str
    integrity_after_drain: str
    acknowledged: int
    missing: list[int]
    unfinished: list[int]
    kills: int
    failpoint_deaths: int
    drained: bool
    seconds: float


def _read_acks(path: Path) -> list[int]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # a torn last line (no newline) was never acknowledged
    return [int(x) for x in lines if x.strip()]


def sqlite_kills(workdir: Path, profile: Profile) -> SqliteResult:
    """Two workers and a producer share one SQLite file; random SIGKILLs land mid-write (the
    workers also carry failpoints that kill them while recording results). Afterwards the file
    must pass `PRAGMA integrity_check`, hold every acknowledged job, and drain them all."""
    t0 = time.time()
    rng = random.Random(profile.seed)
    db = workdir / "chaos.db"
    url = f"sqlite:///{db}"
    acks = workdir / "acked.txt"

    async def migrate() -> None:
        store = open_store(url)
        await store.migrate()
        await store.close()

    asyncio.run(migrate())
    spec = {
        "url": url,
        "types": ["bulk"],
        "limits": {},
        "config": {**node_config(profile), "job_timeouts": {}},
        "evidence": False,
    }
    sup = Supervisor(spec, workdir, slots=2, respawn_delay=0.05)
    sup.failpoints = "after_claim=kill@0.02,before_complete=kill@0.05"
    procs: list[subprocess.Popen[bytes]] = []

    def spawn_producer() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.producer", url, str(acks)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"producer-{len(procs)}.log").open("wb"),
            env=_child_env("", None),
        )
        procs.append(proc)
        return proc

    kills = worker_kills = 0
    producer = spawn_producer()
    sup.start()
    try:
        deadline = time.monotonic() + profile.sqlite_kill_s
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.1, 0.5))
            targets: list[subprocess.Popen[bytes]] = [w.proc for w in sup.alive()]
            if producer.poll() is None:
                targets.append(producer)
            if not targets:
                continue
            victim = rng.choice(targets)
            with contextlib.suppress(ProcessLookupError):
                victim.send_signal(signal.SIGKILL)
            kills += 1
            if victim is not producer:
                worker_kills += 1
            if victim is producer:
                producer.wait()
                producer = spawn_producer()
        # The end, abruptly too: every process is killed wherever it is.
        with contextlib.suppress(ProcessLookupError):
            producer.send_signal(signal.SIGKILL)
        sup.failpoints = ""
        with sup._lock:
            sup._stopping.set()
            workers = list(sup.current.values())
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGKILL)
        for w in workers:
            w.proc.wait(10)
        producer.wait(10)
        for thread in sup._threads:
            thread.join(5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failpoint_deaths = (
        sum(1 for d in sup.deaths if d.returncode == -9 and not d.final) - worker_kills
    )

    def integrity() -> str:
        conn = sqlite3.connect(db)
        try:
            return ";".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
        finally:
            conn.close()

    integrity_after_kills = integrity()
    acked = _read_acks(acks)
    conn = sqlite3.connect(db)
    try:
        present = {int(r[0]) for r in conn.execute("SELECT id FROM jobyard_jobs")}
    finally:
        conn.close()
    missing = sorted(set(acked) - present)

    # Drain with one clean worker: rescues the killed workers' jobs once their lease is out.
    drainer = Supervisor(spec, workdir, slots=1)
    drainer.start()

    def unfinished() -> list[int]:
        c = sqlite3.connect(db)
        try:
            rows = c.execute(
                "SELECT id FROM jobyard_jobs WHERE status NOT IN ('completed', 'failed', "
                "'cancelled')"
            ).fetchall()
        finally:
            c.close()
        return [int(r[0]) for r in rows]

    deadline = time.monotonic() + 30 + 3 * profile.lease
    left = unfinished()
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = unfinished()
    drainer.stop()
    acked_set = set(acked)
    return SqliteResult(
        integrity_after_kills=integrity_after_kills,
        integrity_after_drain=integrity(),
        acknowledged=len(acked_set),
        missing=missing,
        unfinished=sorted(acked_set & set(left)),
        kills=kills,
        failpoint_deaths=max(0, failpoint_deaths),
        drained=not left,
        seconds=round(time.time() - t0, 2),
    )


def results_dir(profile: Profile) -> Path:
    base = Path(os.environ.get("JOBYARD_CHAOS_RESULTS", ROOT / "tests" / "chaos" / "results"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / f"{profile.name}-{stamp}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    runs = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[:-20]:  # keep the last few runs
        shutil.rmtree(old, ignore_errors=True)
    return path


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
