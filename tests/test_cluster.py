"""Many nodes, one database: real OS processes (tests/cluster/node.py), real signals.

Each node appends evidence (job starts and ends, leadership terms) to its own file; the checks
below are computed from that evidence and from the database afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobyard import JobStatus, Queue, open_store
from jobyard.store.ports import Store
from jobyard.store.records import JobResult, Outcome

NODE_SCRIPT = Path(__file__).parent / "cluster" / "node.py"
HEARTBEAT = 0.3
LEASE = 1.5
TIMING = {
    "heartbeat_interval": HEARTBEAT,
    "leader_lease_duration": LEASE,
    "job_poll_interval": 0.2,
    "shutdown_grace_period": 0.2,
}


class Cluster:
    """Node processes on one database, and the evidence they leave."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, **spec: Any) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        spec = {"url": self.url, "evidence": str(self.workdir / f"ev-{n}.jsonl"), **spec}
        spec["config"] = {**TIMING, **spec.get("config", {})}
        log = open(self.workdir / f"node-{n}.log", "wb")  # noqa: SIM115 - closed with the process
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [sys.executable, str(NODE_SCRIPT), json.dumps(spec)], stderr=log, stdout=log, env=env
        )
        self.procs.append(proc)
        return proc

    def events(self, ev: str | None = None) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.workdir.glob("ev-*.jsonl")):
            for line in path.read_text().splitlines():
                event = json.loads(line)
                if ev is None or event["ev"] == ev:
                    found.append(event)
        return found

    def node_of(self, proc: subprocess.Popen[bytes]) -> str:
        (event,) = [e for e in self.events("node") if e["pid"] == proc.pid]
        return str(event["node"])

    def proc_of(self, node_id: str) -> subprocess.Popen[bytes]:
        return next(p for p in self.procs if self.node_of(p) == node_id)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.workdir.glob("node-*.log")))

    def shutdown(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float, what: str) -> None:
    """Wait for another process to reach a state; fail with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within}s: {what}")
        await asyncio.sleep(0.02)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def leadership_intervals(events: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """(believed from, believed until, node) per term, from `term` and `resign` evidence."""
    terms: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e["ev"] == "term":
            span = terms.setdefault((e["node"], e["elected_at"]), [e["t"], e["until"]])
            span[1] = max(span[1], e["until"])
    for e in events:
        if e["ev"] == "resign":
            for (node, _), span in terms.items():
                if node == e["node"] and span[0] <= e["t"]:
                    span[1] = min(span[1], e["t"])
    return sorted((s, u, node) for (node, _), (s, u) in terms.items())


def assert_terms_never_overlap(events: list[dict[str, Any]]) -> None:
    spans = leadership_intervals(events)
    for (_, u1, n1), (s2, _, n2) in itertools.pairwise(spans):
        assert u1 <= s2, f"terms overlap: {n1} until {u1} and {n2} from {s2}"


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Store]:
    store = open_store(store_url)
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
def cluster(store_url: str, tmp_path: Path) -> Any:
    c = Cluster(store_url, tmp_path)
    yield c
    c.shutdown()
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            conn.close()


async def nodes_up(db: Store, n: int) -> None:
    async def check() -> bool:
        return len(await db.list_nodes()) == n

    await eventually(check, 20, f"{n} nodes registered")


async def all_final(db: Store, within: float) -> None:
    async def check() -> bool:
        return all(c.status.is_final for c in await db.count_jobs())

    await eventually(check, within, "every job finished")


@pytest.mark.parametrize("limit", [1, 3])
async def test_global_limit_holds_across_three_racing_processes(
    db: Store, cluster: Cluster, limit: int
) -> None:
    # Each node could run 2 at once: with limit 3, reaching the limit takes two nodes at once.
    for _ in range(3):
        cluster.spawn(types=["work"], limits={"work": limit}, work_ms=20, config={"concurrency": 2})
    await nodes_up(db, 3)
    queue = Queue(db)
    queue.declare("work")
    await queue.enqueue_many("work", [{"i": i} for i in range(300)])
    await all_final(db, within=90)

    counts = {(c.type, c.status): c.count for c in await db.count_jobs()}
    assert counts == {("work", JobStatus.COMPLETED): 300}
    starts = {(e["job"], e["attempt"]): e["t"] for e in cluster.events("start")}
    ends = {(e["job"], e["attempt"]): e["t"] for e in cluster.events("end")}
    assert len(cluster.events("start")) == 300  # each attempt ran once
    assert set(starts) == set(ends)
    assert {attempt for _, attempt in starts} == {1}
    assert max_overlap([(starts[k], ends[k]) for k in starts]) <= limit
    if limit > 2:
        assert len({e["node"] for e in cluster.events("start")}) >= 2  # the nodes really raced


async def test_clean_stop_of_the_leader_hands_over_within_a_second(
    db: Store, cluster: Cluster
) -> None:
    # A 2 s heartbeat: only the resignation being heard, not the next election tick, can
    # explain a takeover within a second.
    slow = {"heartbeat_interval": 2.0, "leader_lease_duration": 6.0}
    for _ in range(3):
        cluster.spawn(types=["work"], config=slow)
    await nodes_up(db, 3)
    await eventually(lambda: _has_leader(db), 10, "a leader")
    first = await db.get_leader()
    assert first is not None
    believers = {e["node"] for e in cluster.events("term") if e["until"] > time.time()}
    assert believers == {first.leader_id}, cluster.events()  # exactly one believes it leads

    cluster.proc_of(first.leader_id).send_signal(signal.SIGTERM)
    await eventually(lambda: _leader_other_than(db, first.leader_id), 5, "a new leader")
    (resigned,) = [e for e in cluster.events("resign") if e["node"] == first.leader_id]
    successor = await db.get_leader()
    assert successor is not None
    took_over = min(e["t"] for e in cluster.events("term") if e["node"] == successor.leader_id)
    assert took_over - resigned["t"] < 1.0, cluster.events()
    assert_terms_never_overlap(cluster.events())


async def test_killed_leader_is_replaced_within_lease_plus_heartbeat(
    db: Store, cluster: Cluster
) -> None:
    for _ in range(3):
        cluster.spawn(types=["work"])
    await nodes_up(db, 3)
    await eventually(lambda: _has_leader(db), 10, "a leader")
    first = await db.get_leader()
    assert first is not None
    victim = cluster.proc_of(first.leader_id)
    killed_at = time.time()
    victim.kill()
    victim.wait()
    await eventually(
        lambda: _leader_other_than(db, first.leader_id), LEASE + HEARTBEAT + 5, "a new leader"
    )
    second = await db.get_leader()
    assert second is not None
    elected = min(e["t"] for e in cluster.events("term") if e["node"] == second.leader_id)
    # The bound is lease + heartbeat; 0.1 s covers the election's own round trip.
    assert elected - killed_at <= LEASE + HEARTBEAT + 0.1
    assert_terms_never_overlap(cluster.events())


async def _has_leader(db: Store) -> bool:
    return await db.get_leader() is not None


async def _leader_other_than(db: Store, old: str) -> bool:
    leader = await db.get_leader()
    return leader is not None and leader.leader_id != old


async def test_job_of_a_killed_node_is_rescued_and_completed_elsewhere(
    db: Store, cluster: Cluster
) -> None:
    for _ in range(2):
        cluster.spawn(types=["hang"], work_ms=5)
    await nodes_up(db, 2)
    queue = Queue(db)
    queue.declare("hang")
    job = await queue.enqueue("hang", {"hang_on_attempt": 1})

    await eventually(lambda: bool(cluster.events("start")), 10, "the job started")
    (started,) = cluster.events("start")
    victim = cluster.proc_of(started["node"])
    killed_at = time.time()
    victim.kill()
    victim.wait()

    async def completed() -> bool:
        current = await db.get_job(job.id)
        return current is not None and current.status is JobStatus.COMPLETED

    await eventually(completed, LEASE + 3 * HEARTBEAT + 5, "the rescued job completed")
    final = await db.get_job(job.id)
    assert final is not None
    assert final.attempt == 2
    assert final.owner != started["node"]
    (finished,) = cluster.events("end")
    # Rescued once the dead node's lease ran out (a lease after its last heartbeat), on the
    # leader's next maintenance pass, then claimed at once on the wake-up.
    assert finished["t"] - killed_at <= LEASE + 2 * HEARTBEAT + 0.5
    # A late completion from the dead attempt changes nothing.
    late = JobResult(job.id, 1, started["node"], Outcome.FAILED, error="late")
    assert not await db.complete_job(late)
    after = await db.get_job(job.id)
    assert after == final


async def test_sigterm_hands_running_jobs_back_and_leaves_cleanly(
    db: Store, cluster: Cluster
) -> None:
    proc = cluster.spawn(types=["hang"])
    await nodes_up(db, 1)
    queue = Queue(db)
    queue.declare("hang")
    job = await queue.enqueue("hang", {"hang_on_attempt": 1})
    await eventually(lambda: bool(cluster.events("start")), 10, "the job started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    handed_back = await db.get_job(job.id)
    assert handed_back is not None
    assert (handed_back.status, handed_back.attempt, handed_back.owner) == (
        JobStatus.PENDING,
        0,
        None,
    )
    assert await db.list_nodes() == []
    assert await db.get_leader() is None
    assert cluster.events("exit")


async def test_enqueue_from_another_process_wakes_an_idle_node_at_once(
    db: Store, cluster: Cluster, store_url: str
) -> None:
    cluster.spawn(types=["work"], work_ms=1, config={"job_poll_interval": 10})
    await nodes_up(db, 1)
    queue = Queue(db)
    queue.declare("work")

    async def latency(n: int) -> float:
        enqueued = time.time()
        job = await queue.enqueue("work", {})
        await eventually(
            lambda: any(e["job"] == job.id for e in cluster.events("start")), 9, "job started"
        )
        (start,) = [e for e in cluster.events("start") if e["job"] == job.id]
        return float(start["t"]) - enqueued

    # Let the node settle idle (its first claims and the listener connect), then measure.
    await eventually(lambda: _listening(store_url), 10, "the listener is up")
    delays = [await latency(i) for i in range(5)]
    bound = 0.5 if store_url.startswith("postgresql") else 0.1 + 0.15
    assert sorted(delays)[2] < bound, delays  # median, far below the 10 s poll

    if store_url.startswith("postgresql"):
        old = _listener_pids(store_url)
        assert len(old) == 1
        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (old[0],))
        await eventually(
            lambda: _listener_pids(store_url) not in ([], old), 10, "the listener reconnected"
        )
        assert await latency(99) < 0.5  # still woken at once, by the new listener


def _listener_pids(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'jobyard:%%:listener'"
        ).fetchall()
    return [r[0] for r in rows]


def _listening(url: str) -> bool:
    return not url.startswith("postgresql") or len(_listener_pids(url)) == 1


async def test_connections_are_named_for_node_and_role(pg_url: str, tmp_path: Path) -> None:
    cluster = Cluster(pg_url, tmp_path)
    db = open_store(pg_url)
    try:
        proc = cluster.spawn(types=["work"])
        await nodes_up(db, 1)
        node = cluster.node_of(proc)

        def roles() -> set[str]:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT application_name FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE %s",
                    (f"jobyard:{node}:%",),
                ).fetchall()
            return {r[0].rsplit(":", 1)[1] for r in rows}

        expected = {"worker", "heartbeat", "leader", "listener", "claim"}
        await eventually(lambda: expected <= roles(), 10, "every role's connection is named")
    finally:
        cluster.shutdown()
        await db.close()
