"""run_attempt: every way one attempt can end, and the decision each leads to.

Each test drives a real attempt on a real event loop, in a task of its own as the dispatcher
runs it, with a few lines of executor; nothing of jobyard's is replaced.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from jobyard import Job, JobContext, JobStatus, PermanentError, Snooze
from jobyard.dispatcher.attempt import Attempt, AttemptEnd, Ending, run_attempt
from jobyard.dispatcher.executor import as_runner
from jobyard.store.records import Outcome

SHORT = 0.05  # a timeout the tests wait out
LONG = 30.0  # a timeout no test reaches


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="attempt-test")
    yield pool
    pool.shutdown(wait=True)


def make_job(attempt: int, max_attempts: int) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=7,
        type="t",
        payload={},
        status=JobStatus.PROCESSING,
        priority=0,
        attempt=attempt,
        max_attempts=max_attempts,
        run_at=now,
        created_at=now,
        started_at=now,
        finished_at=None,
        error=None,
        owner="n",
    )


class Run:
    """One attempt, started in its own task as the dispatcher starts it."""

    def __init__(
        self,
        executor: Any,
        threads: ThreadPoolExecutor,
        *,
        attempt: int = 1,
        max_attempts: int = 3,
        limit_s: float = LONG,
    ) -> None:
        job = make_job(attempt, max_attempts)
        self.ctx = JobContext(job=job, node_id="n", deadline=time.monotonic() + limit_s)
        self.attempt = Attempt(job=job, ctx=self.ctx)
        self._end: AttemptEnd | None = None
        self.attempt.task = asyncio.create_task(self._run(as_runner(executor), threads, limit_s))

    async def _run(self, runner: Any, threads: ThreadPoolExecutor, limit_s: float) -> None:
        self._end = await run_attempt(self.attempt, runner, threads, limit_s)

    async def end(self) -> AttemptEnd:
        await asyncio.wait_for(self.attempt.task, timeout=10)
        assert self._end is not None
        return self._end


async def run(executor: Any, threads: ThreadPoolExecutor, **kwargs: Any) -> AttemptEnd:
    return await Run(executor, threads, **kwargs).end()


# -- the executor ran to its end ---------------------------------------------------------------


async def test_an_executor_that_returns_completes_the_attempt(threads: ThreadPoolExecutor) -> None:
    async def execute(job: Job) -> None:
        pass

    started = Run(execute, threads)
    assert await started.end() == AttemptEnd(Outcome.COMPLETED, Ending.FINISHED)
    assert not started.ctx.cancelled.is_set()


async def test_an_error_with_attempts_left_is_retried_with_its_message(
    threads: ThreadPoolExecutor,
) -> None:
    async def execute(job: Job) -> None:
        raise ValueError("smtp down")

    end = await run(execute, threads, attempt=2, max_attempts=3)
    assert end == AttemptEnd(Outcome.RETRY, Ending.FINISHED, "ValueError: smtp down")


async def test_an_error_on_the_last_attempt_fails_the_job(threads: ThreadPoolExecutor) -> None:
    def execute(job: Job) -> None:  # sync: the error crosses from the thread
        raise RuntimeError

    end = await run(execute, threads, attempt=3, max_attempts=3)
    assert end == AttemptEnd(Outcome.FAILED, Ending.FINISHED, "RuntimeError")


async def test_a_permanent_error_fails_without_the_attempts_left(
    threads: ThreadPoolExecutor,
) -> None:
    async def execute(job: Job) -> None:
        raise PermanentError("cannot ever work")

    end = await run(execute, threads, attempt=1, max_attempts=5)
    assert end == AttemptEnd(Outcome.FAILED, Ending.FINISHED, "PermanentError: cannot ever work")


async def test_a_snooze_releases_the_job_for_its_delay(threads: ThreadPoolExecutor) -> None:
    async def execute(job: Job) -> None:
        raise Snooze(12.5)

    end = await run(execute, threads, attempt=1, max_attempts=1)
    assert end == AttemptEnd(Outcome.RELEASED, Ending.SNOOZED, delay=12.5)


# -- the deadline ------------------------------------------------------------------------------


async def test_an_async_executor_past_its_deadline_is_cancelled_and_timed_out(
    threads: ThreadPoolExecutor,
) -> None:
    cancelled = asyncio.Event()

    async def execute(job: Job) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = Run(execute, threads, attempt=1, max_attempts=2, limit_s=SHORT)
    end = await started.end()
    assert end == AttemptEnd(Outcome.RETRY, Ending.TIMED_OUT, "timed out after 0.05s (job timeout)")
    assert cancelled.is_set()
    assert started.ctx.cancelled.is_set()


async def test_a_timeout_on_the_last_attempt_fails_even_if_the_executor_swallows_it(
    threads: ThreadPoolExecutor,
) -> None:
    async def execute(job: Job) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # pretends it finished

    end = await run(execute, threads, attempt=1, max_attempts=1, limit_s=SHORT)
    assert end == AttemptEnd(
        Outcome.FAILED, Ending.TIMED_OUT, "timed out after 0.05s (job timeout)"
    )


async def test_a_sync_executor_finishing_late_is_waited_for_and_timed_out(
    threads: ThreadPoolExecutor,
) -> None:
    returned = threading.Event()

    def execute(ctx: JobContext, job: Job) -> None:
        assert ctx.cancelled.wait(timeout=10)  # told at the deadline; a thread cannot be stopped
        time.sleep(SHORT)  # winds down in its own time
        returned.set()

    end = await run(execute, threads, attempt=1, max_attempts=2, limit_s=SHORT)
    assert returned.is_set()  # the attempt held on until its thread returned
    assert end == AttemptEnd(Outcome.RETRY, Ending.TIMED_OUT, "timed out after 0.05s (job timeout)")


@pytest.mark.parametrize("late", [Snooze(60), PermanentError("too late to matter")])
async def test_a_snooze_or_permanent_error_after_the_deadline_counts_as_the_timeout(
    threads: ThreadPoolExecutor, late: Exception
) -> None:
    async def execute(job: Job) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise late from None

    end = await run(execute, threads, attempt=1, max_attempts=2, limit_s=SHORT)
    assert end == AttemptEnd(Outcome.RETRY, Ending.TIMED_OUT, "timed out after 0.05s (job timeout)")


# -- cancellation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "outcome"), [(1, Outcome.RETRY), (2, Outcome.FAILED)])
async def test_a_cancelled_error_the_executor_raises_itself_is_a_failure(
    threads: ThreadPoolExecutor, attempt: int, outcome: Outcome
) -> None:
    async def execute(job: Job) -> None:
        raise asyncio.CancelledError

    started = Run(execute, threads, attempt=attempt, max_attempts=2)
    end = await started.end()
    assert end == AttemptEnd(
        outcome, Ending.CANCELLED_ITSELF, "CancelledError: raised by the executor"
    )
    assert started.ctx.cancelled.is_set()


async def test_stopped_for_shutdown_an_async_attempt_is_handed_back_due_now(
    threads: ThreadPoolExecutor,
) -> None:
    running = asyncio.Event()

    async def execute(job: Job) -> None:
        running.set()
        await asyncio.Event().wait()

    started = Run(execute, threads)
    await running.wait()
    started.attempt.stop("shutdown")
    assert await started.end() == AttemptEnd(Outcome.RELEASED, Ending.HANDED_BACK)
    assert started.ctx.cancelled.is_set()


async def test_stopped_for_shutdown_a_sync_attempt_keeps_the_outcome_of_its_thread(
    threads: ThreadPoolExecutor,
) -> None:
    running = threading.Event()

    def execute(ctx: JobContext, job: Job) -> None:
        running.set()
        assert ctx.cancelled.wait(timeout=10)
        raise ValueError("interrupted by the shutdown")

    started = Run(execute, threads)
    assert await asyncio.to_thread(running.wait, 10)
    started.attempt.stop("shutdown")
    end = await started.end()
    assert end == AttemptEnd(
        Outcome.RETRY, Ending.FINISHED, "ValueError: interrupted by the shutdown"
    )


async def test_an_attempt_stopped_because_its_claim_was_lost_records_nothing(
    threads: ThreadPoolExecutor,
) -> None:
    running = asyncio.Event()

    async def execute(job: Job) -> None:
        running.set()
        await asyncio.Event().wait()

    started = Run(execute, threads)
    await running.wait()
    started.attempt.stop("lost")
    assert await started.end() == AttemptEnd(None, Ending.LOST)


async def test_a_sync_attempt_ending_after_its_claim_was_lost_has_its_outcome_dropped(
    threads: ThreadPoolExecutor,
) -> None:
    running, release = threading.Event(), threading.Event()

    def execute(job: Job) -> None:
        running.set()
        release.wait(timeout=10)  # ignores ctx.cancelled

    started = Run(execute, threads)
    try:
        assert await asyncio.to_thread(running.wait, 10)
        started.attempt.stop("lost")
        await asyncio.sleep(SHORT)
        assert not started.attempt.task.done()  # held until its thread returns
    finally:
        release.set()
    assert await started.end() == AttemptEnd(None, Ending.DROPPED)


async def test_a_cancellation_from_outside_the_dispatcher_is_raised_again(
    threads: ThreadPoolExecutor,
) -> None:
    running = asyncio.Event()

    async def execute(job: Job) -> None:
        running.set()
        await asyncio.Event().wait()

    started = Run(execute, threads)
    await running.wait()
    started.attempt.task.cancel()  # not Attempt.stop: no reason given
    with pytest.raises(asyncio.CancelledError):
        await started.attempt.task
    assert started.ctx.cancelled.is_set()
