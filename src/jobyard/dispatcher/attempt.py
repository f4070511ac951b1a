"""One attempt's run: the executor under its timeout, and what the attempt led to.

Modelled on River's `internal/jobexecutor`. The dispatcher claims a job, makes an `Attempt` and
awaits `run_attempt`, which runs the job's executor and returns an `AttemptEnd`: a decision,
not an action. Recording it (the completer, the wake-up, the observers, the log) is the
dispatcher's part, so nothing here touches the store and the decision can be tested with an
event loop and a few lines of executor.

Every way an attempt can end, and what it leads to:

    the executor ...                                   outcome      how
    returns                                            completed    FINISHED
    raises, with attempts left                         retry        FINISHED
    raises on its last attempt, or PermanentError      failed       FINISHED
    is still running at its deadline                   retry/failed TIMED_OUT
      (cancelled, swallowing the cancellation, or a sync thread returning late; whatever it
      returns or raises then, Snooze and PermanentError included, counts as the timeout)
    raises Snooze(s) before its deadline               released     SNOOZED      due in s seconds
    raises CancelledError itself, uncancelled          retry/failed CANCELLED_ITSELF
    is stopped by a draining node (Attempt.stop)       released     HANDED_BACK  due now
      (an async one; a sync one's thread cannot be stopped: it is waited for, and how it
      ends, above, stands)
    is stopped because its claim was lost              (none)       LOST
    ends on its own after its claim was lost           (none)       DROPPED
    has its task cancelled by anyone else              CancelledError is re-raised

A released attempt does not use up an attempt: the store hands the job back to `pending`.
"""

from __future__ import annotations

import asyncio
import enum
from concurrent.futures import Executor as ThreadExecutor
from dataclasses import dataclass, field
from typing import Literal

from jobyard.dispatcher.executor import JobContext, Runner
from jobyard.model import Job, PermanentError, Snooze
from jobyard.store.records import Outcome

__all__ = ["Attempt", "AttemptEnd", "Ending", "StopReason", "run_attempt"]

StopReason = Literal["shutdown", "lost"]


@dataclass(slots=True, eq=False)
class Attempt:
    """One run of a claimed job on this node, as the dispatcher tracks it while it runs.

    `task` is the asyncio task running it; it is set right after the record is made, because
    the task is given the record. `reason` is set only by `stop`, so when the run ends,
    `run_attempt` can tell a cancellation the dispatcher asked for from any other.
    """

    job: Job
    ctx: JobContext
    task: asyncio.Task[None] = field(init=False)
    reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        """Cut the run short: "shutdown" hands the job back, "lost" records nothing.

        The reason is set before the task is cancelled, so the run always sees it. A sync
        executor's thread cannot be stopped: it sees `ctx.cancelled` and may return early.
        """
        self.reason = reason
        self.ctx.cancelled.set()
        self.task.cancel()


class Ending(enum.Enum):
    """How an attempt ended; the module docstring lists what each leads to."""

    FINISHED = "finished"
    TIMED_OUT = "timed_out"
    CANCELLED_ITSELF = "cancelled_itself"
    SNOOZED = "snoozed"
    HANDED_BACK = "handed_back"
    LOST = "lost"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """What an attempt led to. `outcome` is None when there is nothing to record: the job was
    taken away from this node, and its result is no longer this node's to write.

    `error` is the message recorded with a retry or a failure. `delay` is how long a released
    job waits before it is due again (a snooze); a retry's backoff is the dispatcher's policy,
    worked out when the result is recorded.
    """

    outcome: Outcome | None
    how: Ending
    error: str | None = None
    delay: float = 0.0


async def run_attempt(
    attempt: Attempt, runner: Runner, threads: ThreadExecutor, limit_s: float
) -> AttemptEnd:
    """Run the attempt's executor for at most `limit_s` seconds and decide what it led to.

    Returns however the executor ends, except when the task running the attempt is cancelled
    by someone other than `Attempt.stop`: that CancelledError is re-raised. `ctx.cancelled` is
    set whenever the run was cut short, so a sync executor's thread still running sees it.
    """
    job, ctx = attempt.job, attempt.ctx
    scope = asyncio.timeout(limit_s)
    raised: Exception | None = None
    try:
        async with scope:
            await runner(ctx, job, threads)
    except asyncio.CancelledError:
        # Not a timeout: the scope turns its own cancellation into TimeoutError.
        ctx.cancelled.set()
        if attempt.reason == "shutdown":
            return AttemptEnd(Outcome.RELEASED, Ending.HANDED_BACK)
        if attempt.reason == "lost":
            return AttemptEnd(None, Ending.LOST)
        if _raised_by_the_executor():
            # Nobody cancelled this run: a failure like any other, or the job would sit in
            # processing for ever.
            return _failure(job, "CancelledError: raised by the executor", Ending.CANCELLED_ITSELF)
        raise
    except Exception as exc:
        raised = exc
    if attempt.reason == "lost":
        # Taken away while it ran, and it ran on (a sync executor's thread outlives its
        # cancellation): the outcome is no longer this node's to record.
        return AttemptEnd(None, Ending.DROPPED)
    if scope.expired():
        # Cancelled at the deadline, whether the executor let the cancellation through
        # (TimeoutError), swallowed it, or (a sync one) finished late in its thread.
        ctx.cancelled.set()
        return _failure(job, f"timed out after {limit_s:g}s (job timeout)", Ending.TIMED_OUT)
    if raised is None:
        return AttemptEnd(Outcome.COMPLETED, Ending.FINISHED)
    if isinstance(raised, Snooze):
        return AttemptEnd(Outcome.RELEASED, Ending.SNOOZED, delay=raised.seconds)
    permanent = isinstance(raised, PermanentError)
    return _failure(job, _describe(raised), Ending.FINISHED, permanent=permanent)


def _raised_by_the_executor() -> bool:
    """True when the CancelledError being handled was raised, not delivered: no cancellation
    of the current task is pending."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


def _failure(job: Job, error: str, how: Ending, *, permanent: bool = False) -> AttemptEnd:
    """Retry while attempts remain, unless the executor said a retry cannot help."""
    outcome = Outcome.RETRY if job.attempt < job.max_attempts and not permanent else Outcome.FAILED
    return AttemptEnd(outcome, how, error)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
