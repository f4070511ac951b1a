"""The dispatcher: one node of a jobyard cluster.

Every node dispatches (not only the leader); one claim fills every free slot; the store counts
running jobs per type in the database, so limits hold across nodes; results are recorded in
fenced batches; a heartbeat keeps the node alive in the database and notices jobs taken away
from it; the leader also runs maintenance. How one attempt ends is decided in `attempt.py`; this
module records it.

Lifecycle: `await dispatcher.start()` runs until `await dispatcher.stop()` or until the task
running it is cancelled. Stopping drains: no new claims, running jobs get the grace period to
finish, the rest are cancelled and handed back to `pending` without using up an attempt, the
results are flushed, leadership is resigned and the node row removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Never, NoReturn

from jobyard import failpoints
from jobyard.config import Config
from jobyard.dispatcher.attempt import Attempt, AttemptEnd, Ending, run_attempt
from jobyard.dispatcher.backoff import retry_delay
from jobyard.dispatcher.completer import Completer
from jobyard.dispatcher.executor import ExecutorLike, JobContext, Runner, as_runner
from jobyard.dispatcher.hooks import Observers
from jobyard.dispatcher.leader import TRUST_FRACTION, Elector
from jobyard.dispatcher.limits import Limits
from jobyard.dispatcher.maintenance import LeadershipLost, run_maintenance
from jobyard.dispatcher.waiting import wait_event
from jobyard.model import Job, JobyardError
from jobyard.queue import Queue
from jobyard.store.ports import DispatchStore
from jobyard.store.records import (
    CHANNEL_LEADER,
    ClaimParams,
    JobResult,
    LeaderTerm,
    NodeInfo,
    Outcome,
)

__all__ = ["Dispatcher", "new_node_id"]

log = logging.getLogger("jobyard.dispatcher")


def new_node_id() -> str:
    """`host-pid-random`: unique per process, even for two processes with the same pid."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def _bounded(step: Awaitable[None], seconds: float, what: str) -> None:
    """A shutdown step that may fail or hang without keeping the process from exiting."""
    try:
        async with asyncio.timeout(seconds):
            await step
    except Exception:
        log.exception("%s failed during shutdown; the lease will expire on its own", what)


def _refuse_assignment(hook: str) -> NoReturn:
    # Assigning used to replace the one function a hook held, and with it the server's
    # metrics: refused loudly rather than quietly dropping every other observer. The setters
    # take `Never`, so a type checker flags the assignment before it runs.
    raise AttributeError(
        f"Dispatcher.{hook} holds any number of observers and cannot be replaced: "
        f"call dispatcher.{hook}.add(fn) instead of assigning"
    )


class Dispatcher:
    """Claims jobs and runs them through registered executors. One per process is typical."""

    def __init__(
        self,
        config: Config,
        store: DispatchStore,
        queue: Queue,
        limits: Limits | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.queue = queue
        self.limits = limits if limits is not None else Limits()
        self.node_id = config.node_id or new_node_id()
        self._runners: dict[str, Runner] = {}
        self._running: dict[int, Attempt] = {}
        name_store = getattr(store, "set_node_name", None)
        if callable(name_store):
            name_store(self.node_id)
        # The heartbeat and the elector get their own connections (on PostgreSQL), so a node
        # busy claiming never misses a heartbeat and is never presumed dead for it.
        self._heartbeat_store = store.for_role("heartbeat")
        self._leader_store = store.for_role("leader")
        # The dispatch cycles too: enqueues and reads in this process never wait behind them.
        self._claim_store = store.for_role("claim")
        self._elector = Elector(
            self._leader_store,
            self.node_id,
            lease=config.leader_lease_duration,
            interval=config.heartbeat_interval,
        )
        self._on_leadership: Observers[[LeaderTerm | None, float]] = Observers("on_leadership")
        self._elector.on_term = self._on_leadership
        self._threads = ThreadPoolExecutor(
            max_workers=config.concurrency + 4, thread_name_prefix="jobyard-job"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._completer: Completer | None = None
        self._started = False
        self._claim_types: list[str] = []
        self._claim_limits: dict[str, int] = {}
        self._alive_until = 0.0  # monotonic; renewed by every successful heartbeat
        self._strays: set[tuple[int, int]] = set()
        self.claimed = 0  # jobs this node has claimed, for tests and metrics
        self._on_job_start: Observers[[Job]] = Observers("on_job_start")
        self._on_job_end: Observers[[Job, Outcome, float]] = Observers("on_job_end")
        queue.set_notify_func(self.notify)
        failpoints.check()  # a typo in JOBYARD_FAILPOINTS fails here, with a clear error

    # -- registration ----------------------------------------------------------------------
    def register_executor(self, job_type: str, executor: ExecutorLike) -> None:
        """Run jobs of `job_type` with `executor`; also declares `job_type` on the queue."""
        if self._started:
            raise JobyardError("register executors before start()")
        self.queue.declare(job_type)
        self._runners[job_type] = as_runner(executor)

    @property
    def job_types(self) -> list[str]:
        return sorted(self._runners)

    @property
    def is_leader(self) -> bool:
        """True while this node holds, and trusts, the leader lease."""
        return self._elector.is_leader

    @property
    def on_job_start(self) -> Observers[[Job]]:
        """Observers called with `job` as each attempt starts, before its executor: add
        yours with `dispatcher.on_job_start.add(fn)`. Called on the event loop: keep them
        quick. One that raises is logged and ignored; the job runs regardless."""
        return self._on_job_start

    @on_job_start.setter
    def on_job_start(self, value: Never) -> None:
        _refuse_assignment("on_job_start")

    @property
    def on_job_end(self) -> Observers[[Job, Outcome, float]]:
        """Observers called with `(job, outcome, seconds)` once an attempt's result is queued
        for writing (not after a snooze, nor for an attempt taken away from this node): add
        yours with `dispatcher.on_job_end.add(fn)`. Same rules as `on_job_start`."""
        return self._on_job_end

    @on_job_end.setter
    def on_job_end(self, value: Never) -> None:
        _refuse_assignment("on_job_end")

    def on_leadership(self, fn: Callable[[LeaderTerm | None, float], object] | None) -> None:
        """Also call `fn(term, trust_until)` after every election or renewal this node wins;
        `trust_until` is the `time.monotonic()` instant it stops believing it leads unless
        renewed. On a clean stop, `fn(None, now)` marks the instant it stopped leading. For
        audits and tests of leadership history. Each call adds an observer, beside those
        already there; `on_leadership(None)` removes them all. One that raises is logged and
        ignored: the elections go on."""
        if fn is None:
            self._on_leadership.clear()
        else:
            self._on_leadership.add(fn)

    @property
    def claim_store(self) -> DispatchStore:
        """The store the dispatch cycles run on: on PostgreSQL its own connection, named
        `jobyard:<node>:claim`; on SQLite the node's store itself."""
        return self._claim_store

    @property
    def running_count(self) -> int:
        return len(self._running)

    def notify(self) -> None:
        """Wake the dispatch loop at once. Thread-safe; a no-op before start."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            if asyncio.get_running_loop() is loop:
                wake.set()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(wake.set)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Run the node until `stop()` is called or this task is cancelled."""
        if self._started:
            raise JobyardError("a Dispatcher can be started once")
        self._started = True
        # Executors are fixed from here on: work out once what every claim asks for.
        self._claim_types = self.job_types
        self._claim_limits = {
            t: lim for t in self._claim_types if (lim := self.limits.limit_for(t)) is not None
        }
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = self._stopping or asyncio.Event()
        self._stopped = asyncio.Event()
        self._completer = Completer(self.store)
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._register()  # registered before the first claim
            self._elector.start()
            tasks = [
                asyncio.create_task(self._heartbeat_loop(), name="jobyard-heartbeat"),
                asyncio.create_task(self._maintenance_loop(), name="jobyard-maintenance"),
            ]
            if self.config.listen:
                tasks.append(asyncio.create_task(self._watch(), name="jobyard-listener"))
            await self._dispatch_loop()
        finally:
            await asyncio.shield(self._shutdown(tasks))

    async def stop(self) -> None:
        """Drain gracefully and return when the node has stopped. Idempotent; safe before
        start (the dispatcher then never starts)."""
        if self._stopping is None:
            self._stopping = asyncio.Event()
        self._stopping.set()
        self.notify()
        if self._started and self._stopped is not None:
            await self._stopped.wait()

    async def _register(self) -> None:
        """The first heartbeat, retried until it succeeds: a database that is restarting as the
        node starts must not leave the process up with no node in it."""
        assert self._stopping is not None
        delay = 0.1
        while not self._stopping.is_set():
            try:
                await self._heartbeat_once()
                return
            except Exception as exc:
                log.warning("node %s cannot register yet (%s); retrying", self.node_id, exc)
                await wait_event(self._stopping, delay)
                delay = min(delay * 2, self.config.heartbeat_interval.total_seconds())

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        assert self._stopping is not None
        assert self._stopped is not None
        self._stopping.set()
        try:
            await self._drain()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            bound = max(5.0, self.config.heartbeat_interval.total_seconds())
            if self._completer is not None:
                await _bounded(self._completer.flush(), bound, "recording the last results")
            await _bounded(self._elector.stop(resign=True), bound, "resigning leadership")
            await _bounded(
                self._heartbeat_store.remove_node(self.node_id), bound, "removing the node row"
            )
            for role_store in {
                id(s): s for s in (self._heartbeat_store, self._leader_store, self._claim_store)
            }.values():
                if role_store is not self.store:
                    await role_store.close()
        finally:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()
            log.info("node %s stopped", self.node_id)

    async def _drain(self) -> None:
        if not self._running:
            return
        grace = self.config.shutdown_grace_period.total_seconds()
        tasks = [r.task for r in self._running.values()]
        log.info(
            "node %s stopping: waiting up to %.1fs for %d jobs", self.node_id, grace, len(tasks)
        )
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for running in list(self._running.values()):
            if running.task in pending:
                running.stop("shutdown")
        if pending:
            # Cancelled async jobs end at once; a sync job's thread cannot be stopped, so it is
            # waited for, but not for ever: past another grace period it is abandoned, and its
            # job is rescued once this node's row is gone.
            _, stuck = await asyncio.wait(pending, timeout=max(grace, 1.0))
            if stuck:
                log.error("node %s abandons %d jobs that would not stop", self.node_id, len(stuck))

    # -- dispatching -----------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        assert self._stopping is not None
        poll = self.config.job_poll_interval.total_seconds()
        backoff = 0.05
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self._cycle()
                backoff = 0.05
            except Exception:
                log.exception("claiming jobs failed on node %s; retrying", self.node_id)
                # Wake-ups would turn a database outage into a hot loop: back off instead.
                await wait_event(self._stopping, min(backoff, poll))
                backoff *= 2
                continue
            if self._stopping.is_set():
                break
            await wait_event(self._wake, poll)

    async def _cycle(self) -> None:
        """Record finished results and fill every free slot, in one store call."""
        assert self._completer is not None
        free = self.config.concurrency - len(self._running) if self._alive() else 0
        results = self._completer.take()
        if not results and (free <= 0 or not self._runners):
            return
        params = ClaimParams(
            node_id=self.node_id,
            job_types=self._claim_types,
            max_jobs=max(free, 0),
            limits=self._claim_limits,
        )
        try:
            applied, jobs = await self._claim_store.complete_and_claim(results, params)
        except BaseException:
            self._completer.put_back(results)
            raise
        self._completer.settle(results, applied)
        self.claimed += len(jobs)
        if jobs:
            failpoints.hit("after_claim")
        for job in jobs:
            self._launch(job)

    def _launch(self, job: Job) -> None:
        older = self._running.get(job.id)
        if older is not None and not older.task.done():
            # The database gave this job to this node again while an older run of it is still
            # here (a sync executor's thread, taken away and then retried): that run lost its
            # claim, and its outcome must not be recorded, even under the same fencing token.
            log.warning(
                "job %d was claimed again while its attempt %d still runs on node %s",
                job.id,
                older.job.attempt,
                self.node_id,
            )
            older.stop("lost")
        timeout = self.config.timeout_for(job.type).total_seconds()
        ctx = JobContext(job=job, node_id=self.node_id, deadline=time.monotonic() + timeout)
        attempt = Attempt(job=job, ctx=ctx)
        attempt.task = asyncio.create_task(
            self._run(attempt, timeout), name=f"jobyard-job-{job.id}"
        )
        self._running[job.id] = attempt

    async def _run(self, attempt: Attempt, limit_s: float) -> None:
        """Run one attempt, then record how it ended. Raises only when
        its task is cancelled from outside the dispatcher, or a failpoint set to raise fires."""
        job = attempt.job
        started = time.monotonic()
        self._on_job_start(job)
        try:
            end = await run_attempt(attempt, self._runners[job.type], self._threads, limit_s)
        finally:
            # Its slot is free before its result is queued: the wake-up that follows may claim.
            # A later claim of the same job may have replaced this entry; that one stays.
            if self._running.get(job.id) is attempt:
                del self._running[job.id]
        self._record(attempt, end, started)

    def _record(self, attempt: Attempt, end: AttemptEnd, started: float) -> None:
        """Queue the attempt's result for the next cycle, wake the loop for the free slot and
        tell the observers; or, for an attempt whose claim was lost, only say so."""
        assert self._completer is not None
        job = attempt.job
        if end.outcome is None:
            if end.how is Ending.DROPPED:
                log.warning(
                    "job %d attempt %d ended on node %s after it was taken away; outcome dropped",
                    job.id,
                    job.attempt,
                    self.node_id,
                )
            return
        if end.how in (Ending.FINISHED, Ending.TIMED_OUT):
            # The executor ran to its end: its effects happened and its result is not queued.
            failpoints.hit("after_effect")
            if end.error is not None:
                log.log(
                    logging.WARNING if end.outcome is Outcome.RETRY else logging.ERROR,
                    "job %d (%s) attempt %d/%d %s: %s",
                    job.id,
                    job.type,
                    job.attempt,
                    job.max_attempts,
                    "timed out" if end.how is Ending.TIMED_OUT else "failed",
                    end.error,
                )
        self._completer.submit(self._result(job, end.outcome, end.error, delay=end.delay))
        self.notify()  # a slot is free
        if end.how is not Ending.SNOOZED:  # a snooze is no outcome of its own
            self._on_job_end(job, end.outcome, time.monotonic() - started)

    def _result(
        self, job: Job, outcome: Outcome, error: str | None = None, *, delay: float = 0.0
    ) -> JobResult:
        if outcome is Outcome.RETRY:
            delay = retry_delay(
                job.attempt,
                self.config.retry_backoff.total_seconds(),
                self.config.retry_backoff_max.total_seconds(),
            )
        return JobResult(
            job_id=job.id,
            attempt=job.attempt,
            owner=self.node_id,
            outcome=outcome,
            error=error,
            retry_delay=delay,
        )

    # -- liveness and maintenance ----------------------------------------------------------
    def _node_info(self) -> NodeInfo:
        return NodeInfo(
            node_id=self.node_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            job_types=tuple(self.job_types),
            concurrency=self.config.concurrency,
        )

    async def _heartbeat_once(self) -> None:
        """Renew this node's liveness, then reconcile with what the database says it owns:
        a run the database took away is stopped; a job the database says this node owns but
        that nothing here runs or reports (twice in a row) is handed back."""
        before = dict(self._running)
        reporting = self._completer.pending_keys() if self._completer else set()
        lease = self.config.leader_lease_duration
        started = time.monotonic()
        async with asyncio.timeout(lease.total_seconds() / 2):
            beat = await self._heartbeat_store.heartbeat_node(self._node_info(), lease)
        self._alive_until = started + lease.total_seconds() * TRUST_FRACTION
        for job_id, entry in before.items():
            key = (job_id, entry.job.attempt)
            if self._running.get(job_id) is not entry or key in beat.owned:
                continue  # finished or replaced meanwhile, or still ours
            # The database no longer has this run on this node (rescued after we were
            # presumed dead): stop it; its result would be dropped anyway.
            log.warning("job %d attempt %d was taken away from node %s", *key, self.node_id)
            entry.stop("lost")
        local = {(job_id, entry.job.attempt) for job_id, entry in before.items()}
        strays = set(beat.owned) - local - reporting
        for job_id, attempt in strays & self._strays:
            log.warning(
                "job %d attempt %d is owned by node %s but not running here; handing it back",
                job_id,
                attempt,
                self.node_id,
            )
            assert self._completer is not None
            self._completer.submit(
                JobResult(job_id, attempt, self.node_id, Outcome.RELEASED, retry_delay=0.0)
            )
            self.notify()
        self._strays = strays

    def _alive(self) -> bool:
        """False once this node's own liveness may have lapsed in the database: it must stop
        claiming, as the leader may already be rescuing its jobs."""
        return time.monotonic() < self._alive_until

    async def _heartbeat_loop(self) -> None:
        """Beat until cancelled, which happens only after the drain: a stopping node is still
        alive while its jobs finish, and must not be presumed dead and its jobs rescued."""
        interval = self.config.heartbeat_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat_once()
            except Exception:
                log.exception("heartbeat of node %s failed", self.node_id)
                if not self._alive() and self._running:
                    # Presumed dead by now: the leader may be rescuing these jobs, so stop
                    # them here rather than run them twice.
                    log.error("node %s lost its liveness; stopping its jobs", self.node_id)
                    for entry in list(self._running.values()):
                        entry.stop("lost")

    async def _watch(self) -> None:
        """Turn the store's notifications into wake-ups; restarts itself if it ever fails."""
        types = set(self._runners)

        def on_event(channel: str, payload: str) -> None:
            if channel == CHANNEL_LEADER:
                self._elector.poke()
            elif not payload or not types.isdisjoint(payload.split(",")):
                self.notify()

        while True:
            try:
                await self.store.watch(on_event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the wake-up listener of node %s failed; restarting", self.node_id)
                await asyncio.sleep(1.0)

    async def _maintenance_loop(self) -> None:
        assert self._stopping is not None
        interval = self.config.heartbeat_interval.total_seconds()
        while not self._stopping.is_set():
            term = self._elector.term
            if term is not None:
                try:
                    report = await run_maintenance(
                        self.store, self.config, lambda: self._elector.is_leader, term=term
                    )
                    if report.rescued:
                        # Rescued jobs are due now: wake this node and, via the store, the rest.
                        self.notify()
                        await self.store.notify_jobs()
                except LeadershipLost:
                    log.warning(
                        "node %s stopped a maintenance pass: no longer leader", self.node_id
                    )
                except Exception:
                    log.exception("maintenance failed on leader %s", self.node_id)
            await wait_event(self._stopping, interval)
