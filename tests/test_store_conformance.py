"""The store contract, run against SQLite and PostgreSQL alike (the `store` fixture)."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from jobyard import JobStatus, Queue, StoreError, open_store
from jobyard.model import Job
from jobyard.store.ports import Store
from jobyard.store.records import (
    ClaimParams,
    JobFilter,
    JobResult,
    NewJob,
    NodeInfo,
    Outcome,
    RescueResult,
)

LEASE = timedelta(seconds=10)


def new(job_type: str = "t", *, priority: int = 0, run_at: datetime | None = None) -> NewJob:
    return NewJob(type=job_type, payload_json='{"n":1}', priority=priority, run_at=run_at)


def claim(node: str, *types: str, max_jobs: int = 10, **kw: object) -> ClaimParams:
    return ClaimParams(node_id=node, job_types=types or ("t",), max_jobs=max_jobs, **kw)  # type: ignore[arg-type]


def done(job: Job, outcome: Outcome = Outcome.COMPLETED, **kw: object) -> JobResult:
    assert job.owner is not None
    return JobResult(job_id=job.id, attempt=job.attempt, owner=job.owner, outcome=outcome, **kw)  # type: ignore[arg-type]


def node(node_id: str) -> NodeInfo:
    return NodeInfo(node_id=node_id, hostname="h", pid=1, job_types=("t",), concurrency=4)


async def status_of(store: Store, job_id: int) -> JobStatus:
    job = await store.get_job(job_id)
    assert job is not None
    return job.status


# -- enqueue ------------------------------------------------------------------------------


async def test_enqueue_returns_the_stored_pending_job(store: Store) -> None:
    job = await store.enqueue_job(new("email", priority=5))
    assert job.id > 0
    assert (job.type, job.status, job.priority, job.attempt) == ("email", JobStatus.PENDING, 5, 0)
    assert job.payload == {"n": 1}
    assert job.max_attempts == 3
    assert job.owner is None
    assert job.started_at is None
    assert job.finished_at is None
    assert job.run_at.tzinfo is not None
    assert await store.get_job(job.id) == job


async def test_enqueue_many_is_one_batch_in_caller_order(store: Store) -> None:
    jobs = await store.enqueue_jobs([new(f"t{i}") for i in range(50)])
    assert [j.type for j in jobs] == [f"t{i}" for i in range(50)]
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    assert len({j.id for j in jobs}) == 50


async def test_get_job_of_unknown_id_is_none(store: Store) -> None:
    assert await store.get_job(123456) is None


# -- claim --------------------------------------------------------------------------------


async def test_claim_order_is_priority_then_run_at_then_id(store: Store) -> None:
    base = datetime.now(UTC) - timedelta(minutes=10)
    late_low = await store.enqueue_job(new(priority=0, run_at=base + timedelta(minutes=2)))
    early_low = await store.enqueue_job(new(priority=0, run_at=base))
    early_low_2 = await store.enqueue_job(new(priority=0, run_at=base))
    high = await store.enqueue_job(new(priority=9, run_at=base + timedelta(minutes=5)))
    mid_other_type = await store.enqueue_job(new("u", priority=5, run_at=base))
    order = []
    for _ in range(5):
        (job,) = await store.claim_jobs(claim("n1", "t", "u", max_jobs=1))
        order.append(job.id)
    assert order == [high.id, mid_other_type.id, early_low.id, early_low_2.id, late_low.id]


async def test_one_claim_fills_every_free_slot(store: Store) -> None:
    await store.enqueue_jobs([new() for _ in range(10)])
    jobs = await store.claim_jobs(claim("n1", max_jobs=4))
    assert len(jobs) == 4
    for job in jobs:
        assert job.status is JobStatus.PROCESSING
        assert job.owner == "n1"
        assert job.attempt == 1
        assert job.started_at is not None
    counts = {(c.status, c.count) for c in await store.count_jobs()}
    assert counts == {(JobStatus.PROCESSING, 4), (JobStatus.PENDING, 6)}


async def test_claim_never_takes_more_than_asked_or_available(store: Store) -> None:
    await store.enqueue_jobs([new() for _ in range(3)])
    assert len(await store.claim_jobs(claim("n1", max_jobs=10))) == 3
    assert await store.claim_jobs(claim("n1", max_jobs=10)) == []
    assert await store.claim_jobs(claim("n1", max_jobs=0)) == []


async def test_claim_takes_only_the_asked_types(store: Store) -> None:
    await store.enqueue_jobs([new("a"), new("b"), new("c")])
    jobs = await store.claim_jobs(claim("n1", "a", "c"))
    assert sorted(j.type for j in jobs) == ["a", "c"]


async def test_claim_waits_for_run_at(store: Store) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    job = await store.enqueue_job(new(run_at=later))
    assert await store.claim_jobs(claim("n1")) == []
    moved = datetime.now(UTC) + timedelta(hours=2)
    (claimed,) = await store.claim_jobs(claim("n1", now=moved))
    assert claimed.id == job.id


async def test_claim_respects_the_type_limit_across_nodes(store: Store) -> None:
    await store.enqueue_jobs([new() for _ in range(10)])
    first = await store.claim_jobs(claim("n1", max_jobs=2, limits={"t": 3}))
    second = await store.claim_jobs(claim("n2", max_jobs=5, limits={"t": 3}))
    third = await store.claim_jobs(claim("n3", max_jobs=5, limits={"t": 3}))
    assert (len(first), len(second), len(third)) == (2, 1, 0)
    await store.complete_job(done(first[0]))
    assert len(await store.claim_jobs(claim("n3", max_jobs=5, limits={"t": 3}))) == 1


async def test_limit_applies_per_type(store: Store) -> None:
    await store.enqueue_jobs([new("a") for _ in range(5)] + [new("b") for _ in range(5)])
    jobs = await store.claim_jobs(claim("n1", "a", "b", max_jobs=10, limits={"a": 1}))
    assert sorted(j.type for j in jobs) == ["a"] + ["b"] * 5


async def test_racing_claims_from_separate_connections_never_exceed_the_limit(
    store_url: str,
) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    try:
        await stores[0].enqueue_jobs([new() for _ in range(40)])
        for _ in range(5):
            results = await asyncio.gather(
                *(
                    s.claim_jobs(claim(f"n{i}", max_jobs=3, limits={"t": 3}))
                    for i, s in enumerate(stores)
                )
            )
            running = [j for jobs in results for j in jobs]
            assert len(running) <= 3
            processing = [
                c.count for c in await stores[0].count_jobs() if c.status is JobStatus.PROCESSING
            ]
            assert sum(processing) <= 3
            for job in running:
                assert await stores[0].complete_job(done(job))
    finally:
        for s in stores:
            await s.close()


async def test_claim_skips_cancelled_jobs(store: Store) -> None:
    job = await store.enqueue_job(new())
    update = await store.cancel_job(job.id)
    assert update is not None
    assert update.changed
    assert update.job.status is JobStatus.CANCELLED
    assert update.job.finished_at is not None
    assert await store.claim_jobs(claim("n1")) == []


# -- completion and fencing -----------------------------------------------------------------


async def test_completion_is_fenced_by_attempt_and_owner(store: Store) -> None:
    await store.enqueue_job(new())
    (job,) = await store.claim_jobs(claim("n1"))
    wrong_owner = JobResult(job.id, job.attempt, "n2", Outcome.COMPLETED)
    wrong_attempt = JobResult(job.id, job.attempt + 1, "n1", Outcome.COMPLETED)
    assert not await store.complete_job(wrong_owner)
    assert not await store.complete_job(wrong_attempt)
    assert await status_of(store, job.id) is JobStatus.PROCESSING
    assert await store.complete_job(done(job))
    assert not await store.complete_job(done(job, Outcome.FAILED, error="late"))
    final = await store.get_job(job.id)
    assert final is not None
    assert final.status is JobStatus.COMPLETED
    assert final.error is None
    assert final.finished_at is not None
    assert final.owner == "n1"


async def test_stale_attempt_cannot_overwrite_a_newer_attempt(store: Store) -> None:
    await store.enqueue_job(new())
    (old,) = await store.claim_jobs(claim("n1"))
    assert await store.complete_job(done(old, Outcome.RETRY, error="boom", retry_delay=0))
    (newer,) = await store.claim_jobs(claim("n2", now=datetime.now(UTC) + timedelta(seconds=1)))
    assert newer.attempt == 2
    assert not await store.complete_job(done(old, Outcome.FAILED, error="stale"))
    assert await store.complete_job(done(newer))
    assert await status_of(store, old.id) is JobStatus.COMPLETED


async def test_batch_completion_reports_which_results_applied(store: Store) -> None:
    await store.enqueue_jobs([new() for _ in range(3)])
    a, b, c = await store.claim_jobs(claim("n1"))
    stale = JobResult(c.id, c.attempt, "someone-else", Outcome.COMPLETED)
    applied = await store.complete_jobs([done(a), done(b, Outcome.FAILED, error="x"), stale])
    assert applied == {a.id, b.id}
    assert await status_of(store, a.id) is JobStatus.COMPLETED
    assert await status_of(store, b.id) is JobStatus.FAILED
    assert await status_of(store, c.id) is JobStatus.PROCESSING


async def test_retry_goes_back_to_pending_after_the_delay(store: Store) -> None:
    await store.enqueue_job(new())
    (job,) = await store.claim_jobs(claim("n1"))
    now = datetime.now(UTC)
    assert await store.complete_job(
        done(job, Outcome.RETRY, error="ValueError: boom", retry_delay=30), now=now
    )
    retried = await store.get_job(job.id)
    assert retried is not None
    assert retried.status is JobStatus.PENDING
    assert retried.error == "ValueError: boom"
    assert retried.owner is None
    assert retried.attempt == 1
    assert abs((retried.run_at - now).total_seconds() - 30) < 0.01
    assert await store.claim_jobs(claim("n1", now=now + timedelta(seconds=29))) == []
    (again,) = await store.claim_jobs(claim("n1", now=now + timedelta(seconds=31)))
    assert again.attempt == 2


async def test_released_job_is_pending_again_without_using_an_attempt(store: Store) -> None:
    await store.enqueue_job(new())
    (job,) = await store.claim_jobs(claim("n1"))
    assert await store.complete_job(done(job, Outcome.RELEASED))
    released = await store.get_job(job.id)
    assert released is not None
    assert (released.status, released.attempt, released.owner) == (JobStatus.PENDING, 0, None)
    (again,) = await store.claim_jobs(claim("n2"))
    assert again.attempt == 1


# -- cancel, retry, listing ------------------------------------------------------------------


async def test_only_pending_jobs_can_be_cancelled(store: Store) -> None:
    await store.enqueue_job(new())
    (running,) = await store.claim_jobs(claim("n1"))
    unchanged = await store.cancel_job(running.id)
    assert unchanged is not None
    assert not unchanged.changed
    assert unchanged.job.status is JobStatus.PROCESSING
    assert await store.cancel_job(999_999) is None


async def test_a_second_cancel_reports_no_change(store: Store) -> None:
    job = await store.enqueue_job(new())
    first, second = await store.cancel_job(job.id), await store.cancel_job(job.id)
    assert first is not None
    assert second is not None
    assert (first.changed, second.changed) == (True, False)
    assert second.job.status is JobStatus.CANCELLED


async def test_retry_job_restarts_a_failed_job_with_fresh_attempts(store: Store) -> None:
    await store.enqueue_job(new())
    (job,) = await store.claim_jobs(claim("n1"))
    await store.complete_job(done(job, Outcome.FAILED, error="bad"))
    retried = await store.retry_job(job.id)
    assert retried is not None
    assert retried.changed
    assert (retried.job.status, retried.job.attempt, retried.job.owner) == (
        JobStatus.PENDING,
        0,
        None,
    )
    pending_again = await store.retry_job(job.id)  # not failed any more: unchanged
    assert pending_again is not None
    assert not pending_again.changed
    assert pending_again.job.status is JobStatus.PENDING


async def test_list_jobs_filters_and_pages_newest_first(store: Store) -> None:
    jobs = await store.enqueue_jobs([new("a") for _ in range(5)] + [new("b") for _ in range(3)])
    await store.cancel_job(jobs[0].id)
    page1 = await store.list_jobs(JobFilter(type="a", limit=2))
    assert [j.id for j in page1] == [jobs[4].id, jobs[3].id]
    page2 = await store.list_jobs(JobFilter(type="a", limit=2, before_id=page1[-1].id))
    assert [j.id for j in page2] == [jobs[2].id, jobs[1].id]
    cancelled = await store.list_jobs(JobFilter(status=JobStatus.CANCELLED))
    assert [j.id for j in cancelled] == [jobs[0].id]
    assert len(await store.list_jobs()) == 8


async def test_count_jobs_groups_by_type_and_status(store: Store) -> None:
    jobs = await store.enqueue_jobs([new("a"), new("a"), new("b")])
    await store.cancel_job(jobs[2].id)
    counts = {(c.type, c.status): c.count for c in await store.count_jobs()}
    assert counts == {("a", JobStatus.PENDING): 2, ("b", JobStatus.CANCELLED): 1}


# -- transactional enqueue ------------------------------------------------------------------


async def test_enqueue_joins_the_callers_transaction(store: Store, store_url: str) -> None:
    queue = Queue(store)
    queue.declare("t")
    if store.dialect == "sqlite":
        path = store_url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path)
        try:
            rolled_back = queue.enqueue_sync("t", {"x": 1}, conn=conn)
            conn.rollback()
            committed = queue.enqueue_sync("t", {"x": 2}, conn=conn)
            conn.commit()
        finally:
            conn.close()
    else:
        async with await psycopg.AsyncConnection.connect(store_url) as aconn:
            rolled_back = await queue.enqueue("t", {"x": 1}, conn=aconn)
            await aconn.rollback()
            committed = await queue.enqueue("t", {"x": 2}, conn=aconn)
            await aconn.commit()
        with psycopg.connect(store_url) as sconn:
            sync_rolled_back = queue.enqueue_sync("t", {"x": 3}, conn=sconn)
            sconn.rollback()
        assert sync_rolled_back.payload == {"x": 3}
    assert rolled_back.payload == {"x": 1}
    # Only the committed job exists (SQLite may reuse a rolled-back id, so compare payloads).
    assert [j.payload for j in await store.list_jobs()] == [{"x": 2}]
    stored = await store.get_job(committed.id)
    assert stored is not None
    assert stored.payload == {"x": 2}


async def test_enqueue_refuses_a_connection_of_the_wrong_kind(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.enqueue_jobs([new()], conn=object())


# -- nodes and heartbeats ----------------------------------------------------------------------


async def test_heartbeat_registers_then_renews_and_reports_owned_jobs(store: Store) -> None:
    first = await store.heartbeat_node(node("n1"), LEASE)
    assert not first.existed
    assert first.owned == frozenset()
    await store.enqueue_jobs([new(), new()])
    jobs = await store.claim_jobs(claim("n1"))
    second = await store.heartbeat_node(node("n1"), LEASE)
    assert second.existed
    assert second.owned == {(j.id, j.attempt) for j in jobs}
    assert [n.node_id for n in await store.list_nodes()] == ["n1"]


async def test_dead_nodes_are_listed_no_more_and_removed(store: Store) -> None:
    await store.heartbeat_node(node("n1"), LEASE)
    await store.heartbeat_node(node("n2"), timedelta(seconds=1))
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert [n.node_id for n in await store.list_nodes(now=later)] == ["n1"]
    assert await store.delete_dead_nodes(now=later) == 1
    await store.remove_node("n1")
    assert await store.list_nodes() == []


# -- leadership ----------------------------------------------------------------------------


async def test_one_leader_at_a_time_and_only_its_term_renews(store: Store) -> None:
    term = await store.try_acquire_leader("n1", LEASE)
    assert term is not None
    assert term.leader_id == "n1"
    assert await store.try_acquire_leader("n2", LEASE) is None
    assert await store.try_acquire_leader("n1", LEASE) is None  # a new term needs expiry
    renewed = await store.try_acquire_leader("n1", LEASE, term=term)
    assert renewed is not None
    assert renewed.elected_at == term.elected_at
    assert renewed.expires_at >= term.expires_at
    forged = type(term)(leader_id="n2", elected_at=term.elected_at, expires_at=term.expires_at)
    assert await store.try_acquire_leader("n2", LEASE, term=forged) is None
    leader = await store.get_leader()
    assert leader is not None
    assert leader.leader_id == "n1"


async def test_an_expired_lease_goes_to_another_node_and_the_old_term_is_dead(
    store: Store,
) -> None:
    term = await store.try_acquire_leader("n1", timedelta(seconds=1))
    assert term is not None
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert await store.get_leader(now=later) is None
    taken = await store.try_acquire_leader("n2", LEASE, now=later)
    assert taken is not None
    assert taken.leader_id == "n2"
    assert await store.try_acquire_leader("n1", LEASE, term=term, now=later) is None
    assert not await store.resign_leader(term)


async def test_resigning_frees_the_lease_at_once(store: Store) -> None:
    term = await store.try_acquire_leader("n1", LEASE)
    assert term is not None
    assert await store.resign_leader(term)
    assert await store.get_leader() is None
    assert await store.try_acquire_leader("n2", LEASE) is not None


# -- maintenance -----------------------------------------------------------------------------


async def test_fail_stale_jobs_fails_only_processing_jobs_started_before_cutoff(
    store: Store,
) -> None:
    await store.enqueue_jobs([new("a"), new("a"), new("b")])
    a1, a2, b = await store.claim_jobs(claim("n1", "a", "b"))
    await store.complete_job(done(a2))
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    assert await store.fail_stale_jobs(cutoff, exclude_types=["b"]) == 1
    failed = await store.get_job(a1.id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert "timed out" in failed.error
    assert await status_of(store, a2.id) is JobStatus.COMPLETED
    assert await status_of(store, b.id) is JobStatus.PROCESSING
    assert await store.fail_stale_jobs(cutoff - timedelta(hours=1), job_types=["b"]) == 0
    assert await store.fail_stale_jobs(cutoff, job_types=["b"]) == 1


async def test_rescue_returns_jobs_of_dead_nodes_and_fails_exhausted_ones(store: Store) -> None:
    await store.heartbeat_node(node("alive"), LEASE)
    await store.heartbeat_node(node("dying"), timedelta(seconds=1))
    await store.enqueue_jobs([new(), new()])
    await store.enqueue_job(NewJob(type="t", payload_json="{}", max_attempts=1))
    (alive_job,) = await store.claim_jobs(claim("alive", max_jobs=1))
    dying_jobs = await store.claim_jobs(claim("dying", max_jobs=2))
    later = datetime.now(UTC) + timedelta(seconds=3)
    result = await store.rescue_orphaned_jobs(now=later)
    assert (result.retried, result.failed) == (1, 1)
    for job in dying_jobs:
        rescued = await store.get_job(job.id)
        assert rescued is not None
        assert rescued.error is not None
        assert "dying" in rescued.error
        expected = JobStatus.FAILED if job.max_attempts == 1 else JobStatus.PENDING
        assert rescued.status is expected
        assert not await store.complete_job(done(job))  # the old attempt is fenced out
    assert await status_of(store, alive_job.id) is JobStatus.PROCESSING


async def test_rescue_leaves_finished_jobs_alone(store: Store) -> None:
    await store.enqueue_job(new())
    (job,) = await store.claim_jobs(claim("ghost"))
    await store.complete_job(done(job))
    result = await store.rescue_orphaned_jobs()
    assert (result.retried, result.failed) == (0, 0)
    assert await status_of(store, job.id) is JobStatus.COMPLETED


async def test_maintenance_statements_are_fenced_by_the_leader_term(store: Store) -> None:
    """Sent with a term, a maintenance statement changes nothing unless that term holds the
    lease, unexpired: a deposed leader's statement (one it sent after a freeze, say) is a no-op."""
    await store.heartbeat_node(node("dying"), timedelta(seconds=1))
    await store.enqueue_jobs([new(), new(), new()])
    jobs = await store.claim_jobs(claim("dying", max_jobs=2))
    (left,) = [j for j in await store.list_jobs() if j.status is JobStatus.PENDING]
    await store.cancel_job(left.id)
    old = await store.try_acquire_leader("n1", timedelta(seconds=1))
    assert old is not None
    later = datetime.now(UTC) + timedelta(seconds=3)  # n1's lease and the node have expired
    current = await store.try_acquire_leader("n2", LEASE, now=later)
    assert current is not None
    forged = replace(current, elected_at=current.elected_at - timedelta(seconds=1))
    expired = later + LEASE + timedelta(seconds=1)
    for term, at in ((old, later), (forged, later), (current, expired)):
        assert await store.fail_stale_jobs(later, term=term, now=at) == 0
        assert await store.rescue_orphaned_jobs(term=term, now=at) == RescueResult(0, 0)
        assert await store.delete_dead_nodes(term=term, now=at) == 0
    for term in (old, forged):  # pruning is decided by the database's own clock
        assert await store.prune_jobs(JobStatus.CANCELLED, later, term=term) == 0
    assert [await status_of(store, j.id) for j in jobs] == [JobStatus.PROCESSING] * 2
    assert await status_of(store, left.id) is JobStatus.CANCELLED
    # The term that holds the lease does the work (on the rows the deposed terms left alone).
    assert await store.rescue_orphaned_jobs(term=current, now=later) == RescueResult(2, 0)
    assert await store.delete_dead_nodes(term=current, now=later) == 1
    assert await store.prune_jobs(JobStatus.CANCELLED, later, term=current) == 1
    again = await store.claim_jobs(claim("gone", max_jobs=2, now=later))
    assert len(again) == 2
    cutoff = later + timedelta(seconds=1)
    assert await store.fail_stale_jobs(cutoff, term=current, now=later) == 2


# -- schema ------------------------------------------------------------------------------------


async def test_migrate_is_idempotent_and_refuses_a_newer_schema(store_url: str) -> None:
    store = open_store(store_url)
    try:
        version = await store.migrate()
        assert version >= 1
        assert await store.migrate() == version
    finally:
        await store.close()
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        conn.execute(
            "INSERT INTO jobyard_migrations (version, name, applied_at) VALUES (999, 'future', 0)"
        )
        conn.commit()
        conn.close()
    else:
        with psycopg.connect(store_url, autocommit=True) as pconn:
            pconn.execute("INSERT INTO jobyard_migrations (version, name) VALUES (999, 'future')")
    newer = open_store(store_url)
    try:
        with pytest.raises(StoreError, match="newer"):
            await newer.migrate()
    finally:
        await newer.close()


async def test_prune_deletes_old_finished_jobs_in_bounded_batches(store: Store) -> None:
    jobs = await store.enqueue_jobs([new() for _ in range(5)] + [new("keep")])
    for job in jobs[:5]:
        await store.cancel_job(job.id)
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert await store.prune_jobs(JobStatus.COMPLETED, later) == 0
    assert await store.prune_jobs(JobStatus.CANCELLED, later, batch_size=2) == 2
    assert await store.prune_jobs(JobStatus.CANCELLED, later - timedelta(hours=1)) == 0
    assert await store.prune_jobs(JobStatus.CANCELLED, later, batch_size=10) == 3
    assert [j.type for j in await store.list_jobs()] == ["keep"]  # pending is never pruned


async def test_complete_and_claim_frees_a_limited_slot_in_the_same_call(store: Store) -> None:
    await store.enqueue_jobs([new() for _ in range(3)])
    (first,) = await store.claim_jobs(claim("n1", max_jobs=5, limits={"t": 1}))
    stale = JobResult(first.id, first.attempt, "someone-else", Outcome.COMPLETED)
    applied, more = await store.complete_and_claim(
        [stale], claim("n1", max_jobs=5, limits={"t": 1})
    )
    assert (applied, more) == (set(), [])  # a stale result frees nothing
    applied, more = await store.complete_and_claim(
        [done(first)], claim("n1", max_jobs=5, limits={"t": 1})
    )
    assert applied == {first.id}
    assert len(more) == 1  # the slot it freed was taken in the same transaction
    assert more[0].id != first.id
    assert await status_of(store, first.id) is JobStatus.COMPLETED
    applied, none = await store.complete_and_claim([done(more[0])], claim("n1", max_jobs=0))
    assert (applied, none) == ({more[0].id}, [])


async def test_complete_and_claim_leaves_a_job_it_hands_back_to_the_next_call(
    store: Store,
) -> None:
    """The cycle is one snapshot on PostgreSQL; both stores agree that a job handed back in a
    cycle is claimed by a later call, never by the same one."""
    (job,) = await store.enqueue_jobs([new()])
    (running,) = await store.claim_jobs(claim("n1"))
    applied, again = await store.complete_and_claim(
        [done(running, Outcome.RELEASED, retry_delay=0.0)], claim("n1")
    )
    assert (applied, again) == ({job.id}, [])
    assert await status_of(store, job.id) is JobStatus.PENDING
    applied, later = await store.complete_and_claim([], claim("n1"))
    assert applied == set()
    assert [(j.id, j.attempt) for j in later] == [(job.id, 1)]  # the hand-back used no attempt


async def test_sqlite_listings_read_beside_the_writer(sqlite_url: str) -> None:
    """SQLite: listings and counts have a read-only connection and thread of their own, so one
    that takes long (a count over millions of retained jobs) never holds up claims and results.
    Here a read is held open on the reader thread while the store claims and completes."""
    import threading

    from jobyard.store.sqlite.store import SQLiteStore

    store = open_store(sqlite_url)
    assert isinstance(store, SQLiteStore)
    try:
        await store.enqueue_jobs([new(), new()])
        inside, gate = threading.Event(), threading.Event()

        def held(conn: sqlite3.Connection) -> Any:
            inside.set()
            gate.wait(10)
            return conn.execute("SELECT count(*) FROM jobyard_jobs").fetchone()

        reading = asyncio.create_task(store._read(held))
        try:
            assert await asyncio.to_thread(inside.wait, 10)
            async with asyncio.timeout(5):
                (job,) = await store.claim_jobs(claim("n1", max_jobs=1))
                assert await store.complete_job(done(job))
            assert not reading.done()  # the read is still open: the writes went past it
        finally:
            gate.set()
        assert await reading == (2,)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store._read(lambda c: c.execute("DELETE FROM jobyard_jobs"))
        counted = {(c.status, c.count) for c in await store.count_jobs()}
        assert counted == {(JobStatus.COMPLETED, 1), (JobStatus.PENDING, 1)}
    finally:
        await store.close()


def _execute(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one statement straight on the database, outside the store."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as pconn:
        cursor = pconn.execute(sql)
        return cursor.fetchall() if cursor.description else []


async def test_an_application_line_migrates_beside_the_engine_and_on_its_own(
    store_url: str,
) -> None:
    store = open_store(store_url)
    try:
        engine = await store.migrate()
        assert await store.migrate_line("demo", "tests.demo_line") == 2
        assert await store.migrate_line("demo", "tests.demo_line") == 2
        assert await store.migrate() == engine
    finally:
        await store.close()
    _execute(store_url, "INSERT INTO demo_notes (id, note, extra) VALUES (1, 'kept', 'x')")
    lines = _execute(store_url, "SELECT line, max(version) FROM jobyard_migrations GROUP BY line")
    assert dict(lines) == {"jobyard": engine, "demo": 2}


async def test_bookkeeping_of_a_single_line_version_is_upgraded_in_place(store_url: str) -> None:
    """A database whose migrations table predates lines (one row per version, no `line`
    column) keeps its versions and gains lines, with nothing lost."""
    store = open_store(store_url)
    try:
        engine = await store.migrate()
        job = await store.enqueue_job(new())
    finally:
        await store.close()
    _execute(store_url, "DROP TABLE jobyard_migrations")
    _execute(
        store_url,
        "CREATE TABLE jobyard_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT)",
    )
    for version in range(1, engine + 1):
        _execute(store_url, f"INSERT INTO jobyard_migrations VALUES ({version}, 'old', 'then')")
    again = open_store(store_url)
    try:
        assert await again.migrate() == engine
        assert await again.migrate_line("demo", "tests.demo_line") == 2
        assert await again.get_job(job.id) == job
    finally:
        await again.close()
    rows = _execute(store_url, "SELECT line, version FROM jobyard_migrations ORDER BY 1, 2")
    expected = [("demo", 1), ("demo", 2)] + [("jobyard", v) for v in range(1, engine + 1)]
    assert [tuple(r) for r in rows] == expected
