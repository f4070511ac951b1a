"""Executors: the code that does a job's work.

An executor is an object with `async execute(ctx, job)`; raising fails the attempt. Plain
functions work too, async or sync, taking `(ctx, job)` or just `(job)`. Sync ones run in the
dispatcher's worker threads so they never block the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor as ThreadExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from jobyard.model import ConfigError, Job

__all__ = ["Executor", "ExecutorLike", "JobContext", "Runner", "as_runner", "in_thread"]

_JOB_LOG = logging.getLogger("jobyard.job")


@dataclass(slots=True)
class JobContext:
    """What an executor knows about the run it is in.

    `cancelled` is set when the run is abandoned (timeout, shutdown past its grace period, or the
    job was taken away). Async executors are cancelled outright; sync ones cannot be, so long
    sync work should check `ctx.cancelled.is_set()` now and then and return early.
    """

    job: Job
    node_id: str
    deadline: float  # time.monotonic() value after which the run is timed out
    cancelled: threading.Event = field(default_factory=threading.Event)
    log: logging.Logger = _JOB_LOG

    @property
    def remaining(self) -> float:
        """Seconds left before the job times out."""
        return max(0.0, self.deadline - time.monotonic())


@runtime_checkable
class Executor(Protocol):
    """An object with `async execute(ctx, job)`; raising fails the attempt."""

    async def execute(self, ctx: JobContext, job: Job) -> None: ...


ExecutorLike = (
    Executor
    | Callable[[JobContext, Job], Awaitable[None]]
    | Callable[[Job], Awaitable[None]]
    | Callable[[JobContext, Job], None]
    | Callable[[Job], None]
)
Runner = Callable[[JobContext, Job, ThreadExecutor], Awaitable[Any]]


def as_runner(executor: Any) -> Runner:
    """Adapt any accepted executor shape to one async callable; refuse anything else early."""
    target = executor.execute if hasattr(executor, "execute") else executor
    if not callable(target):
        raise ConfigError(f"{executor!r} is not an executor: give an object with execute(ctx, job)")
    try:
        params = [
            p
            for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    required = [p for p in params if p.default is p.empty]
    # (job) or (ctx, job): decided by the required positional parameters; optional ones
    # after them are left alone.
    wants_ctx = len(required) >= 2 or (len(required) == 0 and len(params) != 1)
    is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - an async __call__ on an instance
    )

    if is_async:

        async def run_async(ctx: JobContext, job: Job, _pool: ThreadExecutor) -> Any:
            return await (target(ctx, job) if wants_ctx else target(job))

        return run_async

    async def run_sync(ctx: JobContext, job: Job, pool: ThreadExecutor) -> Any:
        args = (ctx, job) if wants_ctx else (job,)
        future = asyncio.wrap_future(pool.submit(target, *args))
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            # A thread cannot be stopped. Ask it to stop (ctx.cancelled) and hold the job, and
            # its slot under the type's limit, until it returns: otherwise a retry could run
            # beside it and the limit would be exceeded. Its own outcome then stands.
            ctx.cancelled.set()
            result = await _wait_uncancellable(future)
        if inspect.isawaitable(result):  # a sync wrapper that returned a coroutine
            return await result
        return result

    return run_sync


async def _wait_uncancellable(future: asyncio.Future[Any]) -> Any:
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                return future.result()


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """`asyncio.to_thread` for executors, without its trap: if the job is cancelled (timeout,
    shutdown, taken away), wait for the thread to finish before letting the cancellation
    through, so the job keeps its slot under the type's limit while its work still runs."""
    future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await _wait_uncancellable(future)
        raise
