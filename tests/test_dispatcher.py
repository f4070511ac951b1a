"""The dispatcher against real stores: the seed's test, limits, failures, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobyard import (
    Config,
    Dispatcher,
    Job,
    JobContext,
    JobStatus,
    Limits,
    Queue,
)
from jobyard.store.ports import Store
from jobyard.store.records import Outcome
from jobyard.workspaces import (
    JOB_TYPE_WORKSPACE_INIT,
    WorkspaceInitExecutor,
    enqueue_workspace_init,
)

FAST = {
    "job_poll_interval": 0.05,
    "heartbeat_interval": 0.2,
    "leader_lease_duration": 1.0,
    "retry_backoff": 0.01,
    "retry_backoff_max": 0.05,
}


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    task = asyncio.create_task(dispatcher.start())
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()
        await task


async def wait_until(predicate: Callable[[], Any], limit_s: float = 10.0) -> None:
    """Wait for a condition that store state will reach; polls the store, never sleeps blind."""
    deadline = time.monotonic() + limit_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def final_statuses(store: Store) -> Callable[[], Any]:
    async def check() -> bool:
        return all(j.status.is_final for j in await store.list_jobs())

    return check


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Peak number of intervals open at one instant; an end at t closes before a start at t."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


async def test_dispatcher_process_runs_an_enqueued_workspace_init_within_a_second(
    store: Store, queue: Queue
) -> None:
    """The Go jobs module's TestDispatcher_Process, on a real store."""
    dispatcher = Dispatcher(Config(**FAST), store, queue)
    executed: asyncio.Queue[int] = asyncio.Queue()

    async def execute(ctx: JobContext, job: Job) -> None:
        await executed.put(job.id)

    dispatcher.register_executor(JOB_TYPE_WORKSPACE_INIT, execute)
    async with running(dispatcher):
        job = await enqueue_workspace_init(queue, "workspace-1")
        assert await asyncio.wait_for(executed.get(), timeout=1.0) == job.id


async def test_enqueue_wakes_an_idle_dispatcher_at_once(store: Store, queue: Queue) -> None:
    # A poll interval of a minute: only the notify hook can make this job start in time.
    config = Config(**{**FAST, "job_poll_interval": 60})
    dispatcher = Dispatcher(config, store, queue)
    started = asyncio.Event()

    async def execute(ctx: JobContext, job: Job) -> None:
        started.set()

    dispatcher.register_executor("ping", execute)
    async with running(dispatcher):
        await wait_until(_has_claimed_nothing(dispatcher))
        await queue.enqueue("ping", {})
        await asyncio.wait_for(started.wait(), timeout=1.0)


def _has_claimed_nothing(dispatcher: Dispatcher) -> Callable[[], Any]:
    async def check() -> bool:
        return dispatcher.claimed == 0 and dispatcher.is_leader

    return check


async def test_bundled_workspace_executor_calls_the_service(store: Store, queue: Queue) -> None:
    class Service:
        def __init__(self) -> None:
            self.seen: list[str] = []
            self.done = asyncio.Event()

        async def initialize(self, workspace_id: str) -> None:
            self.seen.append(workspace_id)
            self.done.set()

    service = Service()
    dispatcher = Dispatcher(Config(**FAST), store, queue)
    dispatcher.register_executor(JOB_TYPE_WORKSPACE_INIT, WorkspaceInitExecutor(service))
    async with running(dispatcher):
        await enqueue_workspace_init(queue, "ws-42")
        await asyncio.wait_for(service.done.wait(), timeout=5)
    assert service.seen == ["ws-42"]


@pytest.mark.parametrize("limit", [1, 3])
async def test_type_limit_is_never_exceeded(store: Store, queue: Queue, limit: int) -> None:
    dispatcher = Dispatcher(
        Config(**{**FAST, "concurrency": 8}), store, queue, Limits({"work": limit})
    )
    intervals: list[tuple[float, float]] = []

    async def execute(ctx: JobContext, job: Job) -> None:
        start = time.monotonic()
        await asyncio.sleep(0.01)  # the job's own work, not a wait in the test
        intervals.append((start, time.monotonic()))

    dispatcher.register_executor("work", execute)
    async with running(dispatcher):
        await queue.enqueue_many("work", [{"i": i} for i in range(30)])
        await wait_until(final_statuses(store), limit_s=30)
    assert len(intervals) == 30
    assert max_overlap(intervals) == limit
    assert {j.status for j in await store.list_jobs()} == {JobStatus.COMPLETED}


async def test_failing_job_is_retried_with_backoff_then_fails_with_its_error(
    store: Store, queue: Queue
) -> None:
    dispatcher = Dispatcher(Config(**FAST), store, queue)
    attempts: list[tuple[int, float]] = []

    async def execute(ctx: JobContext, job: Job) -> None:
        attempts.append((job.attempt, time.monotonic()))
        raise ValueError(f"broken on attempt {job.attempt}")

    dispatcher.register_executor("flaky", execute)
    async with running(dispatcher):
        job = await queue.enqueue("flaky", {}, max_attempts=3)
        await wait_until(final_statuses(store))
    final = await store.get_job(job.id)
    assert final is not None
    assert final.status is JobStatus.FAILED
    assert final.attempt == 3
    assert final.error == "ValueError: broken on attempt 3"
    assert [a for a, _ in attempts] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
    assert all(gap >= 0.005 for gap in gaps)  # at least half the first backoff (0.01s)


async def test_job_that_succeeds_on_retry_ends_completed(store: Store, queue: Queue) -> None:
    dispatcher = Dispatcher(Config(**FAST), store, queue)

    def execute(job: Job) -> None:  # a sync executor taking only the job
        if job.attempt == 1:
            raise RuntimeError("first try fails")

    dispatcher.register_executor("twice", execute)
    async with running(dispatcher):
        job = await queue.enqueue("twice", {})
        await wait_until(final_statuses(store))
    final = await store.get_job(job.id)
    assert final is not None
    assert (final.status, final.attempt, final.error) == (JobStatus.COMPLETED, 2, None)


async def test_timeout_cancels_the_executor_and_records_a_timeout_error(
    store: Store, queue: Queue
) -> None:
    config = Config(**FAST, job_timeouts={"slow": 0.2})
    dispatcher = Dispatcher(config, store, queue)
    cancelled = asyncio.Event()

    async def execute(ctx: JobContext, job: Job) -> None:
        try:
            await asyncio.Event().wait()  # never finishes on its own
        except asyncio.CancelledError:
            cancelled.set()
            raise

    dispatcher.register_executor("slow", execute)
    async with running(dispatcher):
        job = await queue.enqueue("slow", {}, max_attempts=1)
        await wait_until(final_statuses(store))
    final = await store.get_job(job.id)
    assert final is not None
    assert final.status is JobStatus.FAILED
    assert final.error == "timed out after 0.2s (job timeout)"
    assert cancelled.is_set()


async def test_sync_executor_runs_in_a_thread_and_does_not_block_the_loop(
    store: Store, queue: Queue
) -> None:
    dispatcher = Dispatcher(Config(**FAST), store, queue)
    release = threading.Event()
    threads: list[str] = []

    def blocking(ctx: JobContext, job: Job) -> None:
        threads.append(threading.current_thread().name)
        release.wait(timeout=10)

    dispatcher.register_executor("blocking", blocking)
    async with running(dispatcher):
        job = await queue.enqueue("blocking", {})

        async def is_processing() -> bool:
            current = await store.get_job(job.id)
            return current is not None and current.status is JobStatus.PROCESSING

        await wait_until(is_processing)  # the loop is free while the thread blocks
        release.set()
        await wait_until(final_statuses(store))
    assert threads
    assert threads[0] != threading.current_thread().name


async def test_stop_hands_unfinished_jobs_back_to_pending(store: Store, queue: Queue) -> None:
    config = Config(**FAST, shutdown_grace_period=0.1)
    dispatcher = Dispatcher(config, store, queue)
    started = asyncio.Event()
    finishing = asyncio.Event()

    async def execute(ctx: JobContext, job: Job) -> None:
        if job.payload["quick"]:
            await finishing.wait()
            return
        started.set()
        await asyncio.Event().wait()

    dispatcher.register_executor("long", execute)
    task = asyncio.create_task(dispatcher.start())
    slow = await queue.enqueue("long", {"quick": False})
    quick = await queue.enqueue("long", {"quick": True})
    await asyncio.wait_for(started.wait(), timeout=5)
    stopping = asyncio.create_task(dispatcher.stop())
    finishing.set()  # the quick job finishes within the grace period
    await stopping
    await task
    slow_after = await store.get_job(slow.id)
    quick_after = await store.get_job(quick.id)
    assert slow_after is not None
    assert quick_after is not None
    assert (slow_after.status, slow_after.attempt, slow_after.owner) == (JobStatus.PENDING, 0, None)
    assert quick_after.status is JobStatus.COMPLETED
    assert await store.list_nodes() == []
    assert await store.get_leader() is None  # resigned on a clean stop


async def test_single_node_becomes_leader_at_start_and_resigns_on_stop(
    store: Store, queue: Queue
) -> None:
    dispatcher = Dispatcher(Config(**FAST), store, queue)

    async def leads() -> bool:
        leader = await store.get_leader()
        return (
            dispatcher.is_leader and leader is not None and leader.leader_id == dispatcher.node_id
        )

    async with running(dispatcher):
        await wait_until(leads, limit_s=5)
    assert not dispatcher.is_leader
    assert await store.get_leader() is None


async def test_leader_fails_stale_jobs_of_dead_nodes_and_rescues_the_rest(
    store: Store, queue: Queue
) -> None:
    from datetime import UTC, datetime, timedelta

    from jobyard.store.records import ClaimParams, NodeInfo

    for job_type in ("orphan", "stuck", "busy"):
        queue.declare(job_type)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    orphan = await queue.enqueue("orphan", {})
    stuck = await queue.enqueue("stuck", {}, max_attempts=5, run_at=long_ago - timedelta(1))
    busy = await queue.enqueue("busy", {}, run_at=long_ago - timedelta(1))
    # Nodes that claimed jobs and died without ever heartbeating: "ghost" just now, "ancient"
    # an hour ago (past the job's timeout). And "alive", heartbeating from outside the
    # dispatcher, with a job running for an hour: its own node is in charge of that one.
    await store.claim_jobs(ClaimParams(node_id="ghost", job_types=["orphan"], max_jobs=1))
    await store.claim_jobs(
        ClaimParams(node_id="ancient", job_types=["stuck"], max_jobs=1, now=long_ago)
    )
    alive = NodeInfo("alive", "h", 1, ("busy",), 1)
    await store.heartbeat_node(alive, timedelta(minutes=5))
    await store.claim_jobs(
        ClaimParams(node_id="alive", job_types=["busy"], max_jobs=1, now=long_ago)
    )

    config = Config(**FAST, job_timeouts={"stuck": 0.1, "busy": 0.1})
    dispatcher = Dispatcher(config, store, queue)

    async def handled() -> bool:
        a, b = await store.get_job(orphan.id), await store.get_job(stuck.id)
        return (
            a is not None
            and b is not None
            and a.status is JobStatus.PENDING
            and b.status is JobStatus.FAILED
        )

    async with running(dispatcher):
        await wait_until(handled, limit_s=10)
        busy_now = await store.get_job(busy.id)
    stuck_after = await store.get_job(stuck.id)
    orphan_after = await store.get_job(orphan.id)
    assert stuck_after is not None
    assert orphan_after is not None
    assert busy_now is not None
    assert stuck_after.error is not None
    assert "timed out" in stuck_after.error  # failed for its timeout, not retried
    assert orphan_after.error is not None
    assert "ghost" in orphan_after.error  # rescued: back to pending with a reason
    assert busy_now.status is JobStatus.PROCESSING  # a live node's job is its own business


async def test_cancelling_the_start_task_still_drains(store: Store, queue: Queue) -> None:
    dispatcher = Dispatcher(Config(**FAST, shutdown_grace_period=0), store, queue)
    started = asyncio.Event()

    async def execute(ctx: JobContext, job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    dispatcher.register_executor("hang", execute)
    task = asyncio.create_task(dispatcher.start())
    job = await queue.enqueue("hang", {})
    await asyncio.wait_for(started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await store.get_job(job.id)
    assert after is not None
    assert after.status is JobStatus.PENDING


async def test_stop_before_start_is_safe_and_prevents_start(store: Store, queue: Queue) -> None:
    dispatcher = Dispatcher(Config(**FAST), store, queue)
    await dispatcher.stop()
    await dispatcher.stop()
    await asyncio.wait_for(dispatcher.start(), timeout=5)  # returns at once: already stopped
    assert dispatcher.claimed == 0


async def test_status_shows_types_no_live_node_serves(store: Store, queue: Queue) -> None:
    from jobyard.status import cluster_status

    dispatcher = Dispatcher(Config(**FAST), store, queue, Limits({"served": 2}))
    dispatcher.register_executor("served", lambda job: None)
    queue.declare("nobody")
    await queue.enqueue("nobody", {})

    async def registered() -> bool:
        return len(await store.list_nodes()) == 1

    async with running(dispatcher):
        await wait_until(registered)
        status = await cluster_status(store, dispatcher.limits)
    assert status.unserved == ["nobody"]
    by_type = {t.type: t for t in status.types}
    assert by_type["served"].served
    assert by_type["served"].limit == 2
    assert by_type["nobody"].pending == 1
    assert [n.node_id for n in status.nodes] == [dispatcher.node_id]
    nobody = await store.list_jobs()
    assert [j.status for j in nobody] == [JobStatus.PENDING]  # it waits, untouched


async def test_leader_prunes_finished_jobs_after_their_retention(
    store: Store, queue: Queue
) -> None:
    config = Config(**FAST, retention_completed=0.05, retention_failed=3600)
    dispatcher = Dispatcher(config, store, queue)

    def execute(job: Job) -> None:
        if job.payload["fail"]:
            raise RuntimeError("kept for a while")

    dispatcher.register_executor("short", execute)

    async def only_the_failure_left() -> bool:
        return [j.payload for j in await store.list_jobs()] == [{"fail": True}]

    async with running(dispatcher):
        await queue.enqueue_many("short", [{"fail": False}] * 3)
        await queue.enqueue("short", {"fail": True}, max_attempts=1)
        await wait_until(only_the_failure_left)
    (failed,) = await store.list_jobs()
    assert failed.status is JobStatus.FAILED


async def test_executor_that_swallows_the_timeout_is_still_recorded_as_timed_out(
    store: Store, queue: Queue
) -> None:
    dispatcher = Dispatcher(Config(**FAST, job_timeouts={"stubborn": 0.1}), store, queue)

    async def execute(ctx: JobContext, job: Job) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # swallows the cancellation and returns as if it had finished

    dispatcher.register_executor("stubborn", execute)
    async with running(dispatcher):
        job = await queue.enqueue("stubborn", {}, max_attempts=1)
        await wait_until(final_statuses(store))
    final = await store.get_job(job.id)
    assert final is not None
    assert (final.status, final.error) == (JobStatus.FAILED, "timed out after 0.1s (job timeout)")


async def test_overrunning_sync_executor_keeps_its_limit_slot_until_its_thread_returns(
    store: Store, queue: Queue
) -> None:
    config = Config(**FAST, job_timeouts={"sync_slow": 0.1}, concurrency=4)
    dispatcher = Dispatcher(config, store, queue, Limits({"sync_slow": 1}))
    release = threading.Event()
    timed_out = threading.Event()
    intervals: list[tuple[float, float]] = []

    def execute(ctx: JobContext, job: Job) -> None:
        start = time.monotonic()
        if job.payload["first"] and job.attempt == 1:
            ctx.cancelled.wait(timeout=10)  # cooperative code notices its timeout...
            timed_out.set()
            release.wait(timeout=10)  # ...but takes a while to wind down
        intervals.append((start, time.monotonic()))

    dispatcher.register_executor("sync_slow", execute)
    async with running(dispatcher):
        await queue.enqueue("sync_slow", {"first": True}, max_attempts=2)
        second = await queue.enqueue("sync_slow", {"first": False})
        await asyncio.wait_for(asyncio.to_thread(timed_out.wait, 10), timeout=10)
        # The first job timed out, but its thread still runs: nothing else may start.
        assert (await store.get_job(second.id)).status is JobStatus.PENDING  # type: ignore[union-attr]
        release.set()
        await wait_until(final_statuses(store))
    assert max_overlap(intervals) == 1
    assert len(intervals) == 3  # the first job's two attempts and the second job


async def test_permanent_error_fails_at_once_and_snooze_does_not_use_an_attempt(
    store: Store, queue: Queue
) -> None:
    from jobyard import PermanentError, Snooze

    dispatcher = Dispatcher(Config(**FAST), store, queue)
    seen: list[tuple[str, int]] = []

    async def execute(job: Job) -> None:
        seen.append((job.payload["kind"], job.attempt))
        if job.payload["kind"] == "permanent":
            raise PermanentError("cannot ever work")
        if job.payload["kind"] == "snooze" and len([s for s in seen if s[0] == "snooze"]) < 3:
            raise Snooze(0.01)

    dispatcher.register_executor("control", execute)
    async with running(dispatcher):
        permanent = await queue.enqueue("control", {"kind": "permanent"}, max_attempts=5)
        snoozed = await queue.enqueue("control", {"kind": "snooze"}, max_attempts=1)
        await wait_until(final_statuses(store))
    p = await store.get_job(permanent.id)
    s = await store.get_job(snoozed.id)
    assert p is not None
    assert s is not None
    assert (p.status, p.attempt, p.error) == (
        JobStatus.FAILED,
        1,
        "PermanentError: cannot ever work",
    )
    assert (s.status, s.attempt) == (JobStatus.COMPLETED, 1)  # snoozed twice, one attempt
    assert [a for k, a in seen if k == "snooze"] == [1, 1, 1]


async def test_a_job_owned_here_but_not_running_is_handed_back_and_run(
    store: Store, queue: Queue
) -> None:
    """If a claim committed but its jobs never started (a connection lost right after the
    commit, a crashed task), the heartbeat notices and hands the job back."""
    from datetime import UTC, datetime, timedelta

    from jobyard.store.records import ClaimParams

    dispatcher = Dispatcher(Config(**FAST), store, queue)
    ran = asyncio.Event()

    async def execute(job: Job) -> None:
        ran.set()

    dispatcher.register_executor("stray", execute)
    later = datetime.now(UTC) + timedelta(hours=1)
    job = await queue.enqueue("stray", {}, run_at=later)  # not due: only we claim it
    async with running(dispatcher):
        (claimed,) = await store.claim_jobs(
            ClaimParams(
                node_id=dispatcher.node_id,
                job_types=["stray"],
                max_jobs=1,
                now=later + timedelta(seconds=1),
            )
        )
        assert claimed.id == job.id
        await asyncio.wait_for(ran.wait(), timeout=10)
        await wait_until(final_statuses(store))
    final = await store.get_job(job.id)
    assert final is not None
    assert (final.status, final.attempt) == (JobStatus.COMPLETED, 1)  # the hand-back was free


async def test_a_run_taken_away_then_claimed_again_here_does_not_record_its_outcome(
    store: Store, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync executor's thread cannot be stopped. When its job is taken away (the leader
    failed it, out of attempts, as if this node were dead), retried, and claimed again by this
    same node, the new claim carries the old one's fencing token (id, attempt 1, node). The old
    thread's outcome must still be dropped, or the job would end while its new run goes on."""
    caplog.set_level(logging.WARNING, logger="jobyard")
    dispatcher = Dispatcher(Config(**FAST), store, queue)
    started = [threading.Event(), threading.Event()]
    release = [threading.Event(), threading.Event()]
    runs = itertools.count()
    ended: list[Outcome] = []

    def execute(job: Job) -> None:  # sync: runs in a thread
        k = next(runs)
        started[k].set()
        release[k].wait(30)

    dispatcher.register_executor("t", execute)
    dispatcher.on_job_end.add(lambda job, outcome, seconds: ended.append(outcome))

    async def dropped() -> bool:
        return any("outcome dropped" in r.getMessage() for r in caplog.records)

    async def state_of(job_id: int) -> Job:
        job = await store.get_job(job_id)
        assert job is not None
        return job

    try:
        async with running(dispatcher):
            job = await queue.enqueue("t", {}, max_attempts=1)
            assert await asyncio.to_thread(started[0].wait, 10)
            rescue = await store.rescue_orphaned_jobs(now=datetime.now(UTC) + timedelta(hours=1))
            assert (rescue.retried, rescue.failed) == (0, 1)
            assert await store.retry_job(job.id) is not None
            assert await asyncio.to_thread(started[1].wait, 10)  # claimed here again
            again = await state_of(job.id)
            assert (again.status, again.attempt, again.owner) == (
                JobStatus.PROCESSING,
                1,
                dispatcher.node_id,
            )
            release[0].set()  # the old thread ends now, with the same token as the new run
            await wait_until(dropped)
            assert (await state_of(job.id)).status is JobStatus.PROCESSING
            release[1].set()

            async def completed() -> bool:
                return (await state_of(job.id)).status is JobStatus.COMPLETED

            await wait_until(completed)
    finally:
        for event in release:
            event.set()
    assert ended == [Outcome.COMPLETED]  # the new run's; the old one's was dropped
