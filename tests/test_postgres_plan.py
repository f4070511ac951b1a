"""The cycle's cost must not grow with the backlog or the history: check its plan.

The dispatch cycle runs on a connection that always uses the generic plan (see
`PostgresStore.for_role("claim")`), so that is the plan checked here: prepared with
parameters, as the engine sends it, not planned for the values of one call.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import psycopg
import pytest

from jobyard.store.postgres.store import _Q

# The statement's parameters, in the order they become $1, $2, ... and their types.
_PARAMS = {
    "rows": "text",
    "types": "text[]",
    "limits": "int[]",
    "max_jobs": "int",
    "owner": "text",
    "now": "timestamptz",
    "keys": "bigint[]",
}


def generic_plan(
    conn: psycopg.Connection[Any],
    values: str,
    *,
    analyze: bool = False,
    query: str = "complete_and_claim",
) -> str:
    """The generic plan of the cycle's statement, or of the lean claim_jobs (which takes the
    same parameters and ignores the ones it does not use)."""
    sql = _Q[query]
    for n, name in enumerate(_PARAMS, start=1):
        sql = sql.replace(f"%({name})s", f"${n}")
    assert "%(" not in sql, "the cycle takes a parameter this test does not know"
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(f"PREPARE cycle ({', '.join(_PARAMS.values())}) AS {sql.rstrip(';')}")
    explain = "EXPLAIN (ANALYZE) " if analyze else "EXPLAIN "
    with conn.transaction(force_rollback=True):
        rows = conn.execute(f"{explain}EXECUTE cycle {values}").fetchall()
    conn.execute("DEALLOCATE cycle")
    return "\n".join(r[0] for r in rows)


def fill(conn: psycopg.Connection[Any], *, history: bool = True) -> None:
    if history:
        conn.execute(
            "INSERT INTO jobyard_jobs (type, payload, status, finished_at) "
            "SELECT 'done', '{}', 'completed', now() FROM generate_series(1, 50000)"
        )
    conn.execute(
        "INSERT INTO jobyard_jobs (type, payload, priority) "
        "SELECT CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, '{}', g % 5 "
        "FROM generate_series(1, 20000) AS g"
    )
    conn.execute("ANALYZE jobyard_jobs")


@pytest.mark.parametrize("query", ["complete_and_claim", "claim_jobs"])
@pytest.mark.parametrize("history", [True, False], ids=["with-history", "backlog-only"])
def test_claim_reads_the_claim_index_in_order_and_never_scans_the_table(
    pg_url: str, history: bool, query: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        fill(conn, history=history)
        plan = generic_plan(
            conn, "('[]', '{a,b}', '{16,NULL}', 16, 'n1', NULL, '{42}')", query=query
        )
    assert "jobyard_jobs_claim" in plan, plan
    assert "Seq Scan on jobyard_jobs" not in plan, plan
    # Each type's candidates come from an ordered index scan cut by LIMIT, not a sort of the
    # backlog: the only Sort is over the few candidates.
    sorts = [line for line in plan.splitlines() if line.strip().startswith("->  Sort ")]
    assert len(sorts) == 1, plan
    assert "CTE Scan on candidates" in plan.split("->  Sort ", 1)[1].splitlines()[2], plan
    # The claimed rows are found by primary key. (Joined to the candidates instead, a generic
    # plan, which cannot know how few they are, hashes the whole table.)
    assert "Index Scan using jobyard_jobs_pkey" in plan, plan


def test_cycle_touches_a_few_pages_whatever_the_history(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        fill(conn)
        claimed = conn.execute(
            "UPDATE jobyard_jobs SET status = 'processing', owner = 'n1', attempt = 1 "
            "WHERE id IN (SELECT id FROM jobyard_jobs WHERE type = 'a' ORDER BY id LIMIT 16) "
            "RETURNING id"
        ).fetchall()
        rows = ",".join(
            f'{{"id": {i}, "attempt": 1, "owner": "n1", "outcome": "completed", '
            f'"error": null, "retry_delay": 0}}'
            for (i,) in claimed
        )
        plan = generic_plan(
            conn, f"('[{rows}]', '{{a}}', '{{NULL}}', 16, 'n1', NULL, '{{}}')", analyze=True
        )
    # 16 completed and 16 claimed: both updates find their rows without reading the 70,000.
    updates = re.findall(r"Update on jobyard_jobs \S+ .*actual time=\S+ rows=(\d+)", plan)
    assert updates == ["16", "16"], plan
    assert "Seq Scan on jobyard_jobs" not in plan, plan


async def test_only_the_claim_connection_forces_the_generic_plan(pg_url: str) -> None:
    """Elsewhere (listing and counting jobs with optional filters) a plan for the values at
    hand is worth planning for."""
    from jobyard import open_store
    from jobyard.store.postgres.store import PostgresStore

    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    claim = store.for_role("claim")
    try:
        assert await claim._fetch("SHOW plan_cache_mode") == [("force_generic_plan",)]
        assert await store._fetch("SHOW plan_cache_mode") == [("auto",)]
        heartbeat = store.for_role("heartbeat")
        assert await heartbeat._fetch("SHOW plan_cache_mode") == [("auto",)]
        await heartbeat.close()
    finally:
        await claim.close()
        await store.close()


async def test_fast_transitions_relax_only_the_claim_connections_commits(pg_url: str) -> None:
    """Claims and results may be lost in a crash (the job runs again); enqueues never."""
    from jobyard import open_store
    from jobyard.store.postgres.store import PostgresStore

    for fast, claims in ((False, "on"), (True, "off")):
        store = open_store(pg_url, fast_transitions=fast)
        assert isinstance(store, PostgresStore)
        claim = store.for_role("claim")
        try:
            assert await claim._fetch("SHOW synchronous_commit") == [(claims,)]
            assert await store._fetch("SHOW synchronous_commit") == [("on",)]
        finally:
            await claim.close()
            await store.close()


async def test_a_burst_of_enqueues_is_covered_by_one_trailing_notify(pg_url: str) -> None:
    """The first enqueue of a window notifies inline; the rest are covered by one trailing
    NOTIFY, sent after their commits on the `notify` connection."""
    from jobyard import open_store
    from jobyard.store.postgres.store import PostgresStore
    from jobyard.store.records import CHANNEL_JOBS, NewJob

    producer = open_store(pg_url, notify_window=1.0)
    listening = open_store(pg_url)
    assert isinstance(producer, PostgresStore)
    assert isinstance(listening, PostgresStore)
    ready, covered = asyncio.Event(), asyncio.Event()
    seen: list[set[str]] = []

    def on_event(channel: str, payload: str) -> None:
        if channel == "":
            ready.set()
        elif channel == CHANNEL_JOBS:
            seen.append(set(payload.split(",")))
            if set().union(*seen) >= {"a", "b", "c"}:
                covered.set()

    watcher = asyncio.create_task(listening.watch(on_event))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
            for job_type in ("a", "b", "c"):
                await producer.enqueue_jobs([NewJob(type=job_type, payload_json="{}")])
            await covered.wait()
        assert seen == [{"a"}, {"b", "c"}]  # one inline, then one trailing for the rest
        assert producer._notifier is not None  # the trailing one's own connection
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await producer.close()
        await listening.close()


async def test_a_claim_that_waited_for_the_type_lock_counts_what_was_claimed_meanwhile(
    pg_url: str,
) -> None:
    """The hazard of a one-statement claim: its snapshot is older than the lock it waits for.

    Claimer A holds the type's lock in an open transaction after claiming the whole limit.
    Claimer B's statement starts (and takes its snapshot) while A is still open, then waits for
    the lock inside it. When A commits, B must see A's claims and take nothing.
    """
    from jobyard import open_store
    from jobyard.store.postgres.store import PostgresStore, type_lock_key
    from jobyard.store.records import NewJob

    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    await store.enqueue_jobs([NewJob(type="t", payload_json="{}") for _ in range(6)])
    sql = _Q["complete_and_claim"]

    def params(owner: str) -> dict[str, Any]:
        return {
            "rows": "[]",
            "types": ["t"],
            "limits": [2],
            "max_jobs": 5,
            "owner": owner,
            "now": None,
            "keys": [type_lock_key("t")],
        }

    holder = await psycopg.AsyncConnection.connect(pg_url)  # not autocommit: stays open
    waiter = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        first = await (await holder.execute(sql, params("a"))).fetchall()
        assert len([r for r in first if r[1] is not None]) == 2
        waiter_pid = waiter.info.backend_pid
        second = asyncio.create_task(waiter.execute(sql, params("b")))
        async with asyncio.timeout(10):
            while True:  # until B waits for the advisory lock that A holds
                async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as look:
                    cur = await look.execute(
                        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'"
                        " AND NOT granted",
                        (waiter_pid,),
                    )
                    row = await cur.fetchone()
                if row and row[0]:
                    break
                await asyncio.sleep(0.01)
        await holder.commit()
        rows = await (await second).fetchall()
        assert [r for r in rows if r[1] is not None] == []  # the limit is full: nothing taken
        running = await store._fetch(
            "SELECT owner, count(*) FROM jobyard_jobs WHERE status = 'processing' GROUP BY owner"
        )
        assert running == [("a", 2)]
    finally:
        await holder.close()
        await waiter.close()
        await store.close()


@pytest.mark.parametrize("max_jobs", [1, 7, 40])
def test_the_lean_claim_takes_what_the_cycle_statement_would(pg_url: str, max_jobs: int) -> None:
    """claim_jobs stands in for complete_and_claim when there is nothing to record and no
    limit: on the same rows it must claim the same jobs, in the same order, the same way."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobyard_jobs (type, payload, priority, run_at) "
            "SELECT (ARRAY['a', 'b', 'c'])[g % 3 + 1], '{}', g % 4, "
            "now() - make_interval(secs => g % 7) + make_interval(secs => 3600 * (g % 11 / 10)) "
            "FROM generate_series(1, 60) AS g"
        )
        (due,) = conn.execute(
            "SELECT count(*) FROM jobyard_jobs WHERE type IN ('a', 'b') AND run_at <= now()"
        ).fetchone() or (0,)
        assert 0 < due < 40  # some of a and b are not due yet, and c is not asked for
        params = {
            "rows": "[]",
            "types": ["a", "b"],
            "limits": [None, None],
            "max_jobs": max_jobs,
            "owner": "n1",
            "now": None,
            "keys": [],
        }
        claimed = {}
        for query in ("complete_and_claim", "claim_jobs"):
            with conn.transaction(force_rollback=True):
                rows = conn.execute(_Q[query], params).fetchall()
                if query == "complete_and_claim":
                    rows = [r[1:] for r in rows if r[1] is not None]
                after = conn.execute(
                    "SELECT id, status, owner, attempt, started_at IS NOT NULL FROM jobyard_jobs "
                    "WHERE status = 'processing' ORDER BY id"
                ).fetchall()
                claimed[query] = ([r[0] for r in rows], after)
    ids, after = claimed["complete_and_claim"]
    assert len(ids) == min(max_jobs, due)
    assert claimed["claim_jobs"] == claimed["complete_and_claim"]
    assert all(row[1:] == ("processing", "n1", 1, True) for row in after)
