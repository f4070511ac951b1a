"""as_runner: every accepted executor shape becomes one async runner; anything else is refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from jobyard import ConfigError
from jobyard.dispatcher.executor import Executor, JobContext, as_runner
from jobyard.model import Job, JobStatus


def make_job(job_id: int = 1) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=job_id,
        type="email",
        payload={"to": "a@b.c"},
        status=JobStatus.PROCESSING,
        priority=0,
        attempt=1,
        max_attempts=3,
        run_at=now,
        created_at=now,
        started_at=now,
        finished_at=None,
        error=None,
        owner="n",
    )


@pytest.fixture
def job() -> Job:
    return make_job()


@pytest.fixture
def ctx(job: Job) -> JobContext:
    return JobContext(job=job, node_id="n", deadline=time.monotonic() + 10)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="t")
    yield executor
    executor.shutdown(wait=True)


class Seen:
    """What an executor saw when it ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.thread: str | None = None

    def record(self, *args: Any) -> None:
        self.calls.append(args)
        self.thread = threading.current_thread().name


# -- the seed's Executor shape -----------------------------------------------------------------


async def test_object_with_async_execute_gets_ctx_and_job(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    seen = Seen()

    class SendEmail:
        async def execute(self, ctx: JobContext, job: Job) -> None:
            seen.record(ctx, job)

    executor = SendEmail()
    assert isinstance(executor, Executor)

    runner = as_runner(executor)
    await runner(ctx, job, pool)

    assert seen.calls == [(ctx, job)]
    assert seen.thread == threading.current_thread().name  # ran on the event loop


async def test_async_execute_exception_propagates(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    class Broken:
        async def execute(self, ctx: JobContext, job: Job) -> None:
            raise RuntimeError("smtp down")

    with pytest.raises(RuntimeError, match="smtp down"):
        await as_runner(Broken())(ctx, job, pool)


# -- async functions ---------------------------------------------------------------------------


async def test_async_function_with_ctx_and_job(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    seen = Seen()

    async def run(ctx: JobContext, job: Job) -> None:
        seen.record(ctx, job)

    await as_runner(run)(ctx, job, pool)

    assert seen.calls == [(ctx, job)]
    assert seen.thread == threading.current_thread().name


async def test_async_function_with_job_only(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    seen = Seen()

    async def run(job: Job) -> None:
        seen.record(job)

    await as_runner(run)(ctx, job, pool)

    assert seen.calls == [(job,)]
    assert seen.thread == threading.current_thread().name


async def test_async_function_return_value_is_passed_back(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    async def run(job: Job) -> int:
        return job.id * 10

    assert await as_runner(run)(ctx, job, pool) == 10


async def test_async_function_exception_propagates(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    async def run(ctx: JobContext, job: Job) -> None:
        raise ValueError("bad payload")

    with pytest.raises(ValueError, match="bad payload"):
        await as_runner(run)(ctx, job, pool)


async def test_instance_with_async_call_is_run_as_async(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    seen = Seen()

    class Handler:
        async def __call__(self, ctx: JobContext, job: Job) -> None:
            seen.record(ctx, job)

    await as_runner(Handler())(ctx, job, pool)

    assert seen.calls == [(ctx, job)]
    assert seen.thread == threading.current_thread().name


# -- sync functions ----------------------------------------------------------------------------


async def test_sync_function_with_ctx_and_job_runs_in_the_pool(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    seen = Seen()

    def run(ctx: JobContext, job: Job) -> None:
        seen.record(ctx, job)

    await as_runner(run)(ctx, job, pool)

    assert seen.calls == [(ctx, job)]
    assert seen.thread is not None
    assert seen.thread != threading.main_thread().name
    assert seen.thread.startswith("t_")


async def test_sync_function_with_job_only_runs_in_the_pool(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    seen = Seen()

    def run(job: Job) -> None:
        seen.record(job)

    await as_runner(run)(ctx, job, pool)

    assert seen.calls == [(job,)]
    assert seen.thread is not None
    assert seen.thread != threading.main_thread().name
    assert seen.thread.startswith("t_")


async def test_object_with_sync_execute_runs_in_the_pool(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    seen = Seen()

    class Legacy:
        def execute(self, ctx: JobContext, job: Job) -> None:
            seen.record(ctx, job)

    await as_runner(Legacy())(ctx, job, pool)

    assert seen.calls == [(ctx, job)]
    assert seen.thread is not None
    assert seen.thread.startswith("t_")


async def test_sync_function_return_value_and_exception_pass_back(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    def ok(job: Job) -> str:
        return f"done {job.id}"

    def broken(ctx: JobContext, job: Job) -> None:
        raise KeyError("missing")

    assert await as_runner(ok)(ctx, job, pool) == "done 1"
    with pytest.raises(KeyError, match="missing"):
        await as_runner(broken)(ctx, job, pool)


async def test_sync_function_can_see_cancellation_through_ctx(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    def run(ctx: JobContext, job: Job) -> bool:
        return ctx.cancelled.is_set()

    runner = as_runner(run)
    assert await runner(ctx, job, pool) is False
    ctx.cancelled.set()
    assert await runner(ctx, job, pool) is True


async def test_one_runner_serves_many_jobs(ctx: JobContext, pool: ThreadPoolExecutor) -> None:
    seen: list[int] = []

    async def run(job: Job) -> None:
        seen.append(job.id)

    runner = as_runner(run)
    for job_id in (1, 2, 3):
        other = make_job(job_id)
        await runner(JobContext(job=other, node_id="n", deadline=ctx.deadline), other, pool)

    assert seen == [1, 2, 3]


# -- refused -----------------------------------------------------------------------------------


@pytest.mark.parametrize("not_an_executor", [None, 42, "execute", object(), [1]])
def test_non_callable_raises_config_error(not_an_executor: Any) -> None:
    with pytest.raises(ConfigError, match="not an executor"):
        as_runner(not_an_executor)


def test_object_whose_execute_is_not_callable_raises_config_error() -> None:
    class Fake:
        execute = 5

    with pytest.raises(ConfigError, match="not an executor"):
        as_runner(Fake())


# -- JobContext --------------------------------------------------------------------------------


def test_job_context_remaining_counts_down_to_zero(job: Job) -> None:
    future = JobContext(job=job, node_id="n", deadline=time.monotonic() + 10)
    past = JobContext(job=job, node_id="n", deadline=time.monotonic() - 10)

    assert 0 < future.remaining <= 10
    assert past.remaining == 0.0
    assert not future.cancelled.is_set()


async def test_function_with_job_and_an_optional_parameter_gets_the_job(
    ctx: JobContext, job: Job, pool: ThreadPoolExecutor
) -> None:
    seen = Seen()

    async def run(job: Job, retries: int = 3) -> None:
        seen.record(job, retries)

    await as_runner(run)(ctx, job, pool)

    assert seen.calls == [(job, 3)]
