"""One attempt's run on this node, from claim to recorded outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobyard import failpoints
from jobyard.dispatcher.executor import JobContext
from jobyard.model import Job, PermanentError, Snooze
from jobyard.store.records import Outcome

if TYPE_CHECKING:
    from jobyard.dispatcher.dispatcher import Dispatcher

__all__ = ["Attempt", "execute"]

log = logging.getLogger("jobyard.dispatcher")


@dataclass(slots=True)
class Attempt:
    job: Job
    ctx: JobContext
    task: asyncio.Task[None]
    reason: str | None = None  # why it was cancelled: "shutdown" or "lost"


async def execute(dispatcher: Dispatcher, job: Job, ctx: JobContext, limit_s: float) -> None:
    """The seed's `execute`: run, then record the outcome. Never raises."""
    assert dispatcher._completer is not None
    started = time.monotonic()
    me = dispatcher._running.get(job.id)  # this run's entry; a later claim may replace it

    def forget() -> None:
        if dispatcher._running.get(job.id) is me:
            del dispatcher._running[job.id]

    def lost() -> bool:
        """Taken away while it ran (a sync executor's thread outlives its cancellation):
        the outcome is not this node's to record. Logged, then dropped."""
        if me is None or me.reason != "lost":
            return False
        forget()
        log.warning(
            "job %d attempt %d ended on node %s after it was taken away; outcome dropped",
            job.id,
            job.attempt,
            dispatcher.node_id,
        )
        return True

    dispatcher._observe_start(job)
    runner = dispatcher._runners[job.type]
    error: str | None = None
    timed_out = permanent = False
    scope = asyncio.timeout(limit_s)
    try:
        async with scope:
            await runner(ctx, job, dispatcher._threads)
    except asyncio.CancelledError:
        forget()
        ctx.cancelled.set()
        reason = me.reason if me is not None else None
        task = asyncio.current_task()
        if reason is None and task is not None and task.cancelling() == 0:
            # The executor raised CancelledError itself (nobody cancelled this run): a
            # failure like any other, or the job would sit in processing for ever.
            reason = "raised"
        if reason == "shutdown":
            dispatcher._completer.submit(dispatcher._result(job, Outcome.RELEASED))
            dispatcher._observe_end(job, Outcome.RELEASED, started)
        elif reason == "raised":
            outcome = Outcome.RETRY if job.attempt < job.max_attempts else Outcome.FAILED
            error = "CancelledError: raised by the executor"
            dispatcher._completer.submit(dispatcher._result(job, outcome, error))
            dispatcher.notify()
            dispatcher._observe_end(job, outcome, started)
        elif reason != "lost":
            raise
        return
    except Snooze as snooze:
        if lost():
            return
        if not scope.expired():
            forget()
            dispatcher._completer.submit(
                dispatcher._result(job, Outcome.RELEASED, delay=snooze.seconds)
            )
            dispatcher.notify()
            return
    except PermanentError as exc:
        if not scope.expired():
            permanent = True
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except Exception as exc:
        if not scope.expired():
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if lost():
        return
    if scope.expired():
        # Cancelled at the deadline, whether the executor let the cancellation through
        # (TimeoutError), swallowed it, or (a sync one) finished late in its thread.
        timed_out = True
        ctx.cancelled.set()
        error = f"timed out after {limit_s:g}s (job timeout)"
    forget()
    failpoints.hit("after_effect")
    if error is None:
        outcome = Outcome.COMPLETED
    elif job.attempt < job.max_attempts and not permanent:
        outcome = Outcome.RETRY
    else:
        outcome = Outcome.FAILED
    if error is not None:
        log.log(
            logging.WARNING if outcome is Outcome.RETRY else logging.ERROR,
            "job %d (%s) attempt %d/%d %s: %s",
            job.id,
            job.type,
            job.attempt,
            job.max_attempts,
            "timed out" if timed_out else "failed",
            error,
        )
    dispatcher._completer.submit(dispatcher._result(job, outcome, error))
    dispatcher.notify()  # a slot is free
    dispatcher._observe_end(job, outcome, started)
