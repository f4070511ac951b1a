"""The store seam: every operation the engine needs from a database, and nothing else.

Both backends (SQLite and PostgreSQL) implement `Store`, and one conformance suite runs against
both. The backends own the SQL and the atomicity; the engine owns the policy (when to retry, how
long to back off, which types to claim). Parameters that travel together are frozen dataclasses.

Time: every time-dependent operation takes an optional `now`. When it is None the database's own
clock is used (on SQLite, which only ever serves one host, that is the host clock). Tests pass
`now` to move time without sleeping.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from jobyard.model import Job, JobStatus
from jobyard.services.entities import (
    EntityStatus,
    NewSession,
    NewWorkspace,
    Session,
    Workspace,
)

__all__ = [
    "CHANNEL_JOBS",
    "CHANNEL_LEADER",
    "ClaimParams",
    "HeartbeatResult",
    "JobFilter",
    "JobResult",
    "JobUpdate",
    "LeaderTerm",
    "NewJob",
    "NodeInfo",
    "Outcome",
    "RescueResult",
    "Store",
    "StoreBase",
    "TypeCount",
]


# Wake-up channels (PostgreSQL LISTEN/NOTIFY names; `Store.watch` reports them).
CHANNEL_JOBS = "jobyard_jobs"  # payload: the enqueued job types, comma-separated
CHANNEL_LEADER = "jobyard_leader"  # the leader lease was resigned


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to insert. `payload_json` is already validated and serialized by the Queue."""

    type: str
    payload_json: str
    priority: int = 0
    max_attempts: int = 3
    run_at: datetime | None = None  # None: due at once (database clock)


@dataclass(frozen=True, slots=True)
class ClaimParams:
    """One claim: take up to `max_jobs` due pending jobs of `job_types` for `node_id`.

    `limits` maps a type to its cluster-wide limit; a type absent from it has none. The store
    counts running jobs of each limited type and claims under a per-type lock, so the count and
    the claim are one atomic step across all nodes.
    """

    node_id: str
    job_types: Sequence[str]
    max_jobs: int
    limits: Mapping[str, int] = field(default_factory=dict)
    now: datetime | None = None


class Outcome(enum.StrEnum):
    """What a finished attempt leads to."""

    COMPLETED = "completed"  # → completed
    FAILED = "failed"  # → failed, final
    RETRY = "retry"  # → pending, run_at = now + retry_delay
    RELEASED = (
        "released"  # → pending after retry_delay, the attempt not counted (hand-back, snooze)
    )


@dataclass(frozen=True, slots=True)
class JobResult:
    """The result of one attempt, fenced by `(job_id, attempt, owner)`."""

    job_id: int
    attempt: int
    owner: str
    outcome: Outcome
    error: str | None = None
    retry_delay: float = 0.0  # seconds, for Outcome.RETRY and Outcome.RELEASED


@dataclass(frozen=True, slots=True)
class JobFilter:
    """A page of `list_jobs`: newest first, keyset-paginated with `before_id`."""

    status: JobStatus | None = None
    type: str | None = None
    limit: int = 100
    before_id: int | None = None


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """An operator's compare-and-set on one job: the job as it now is, and whether this very
    call changed it. Of many concurrent calls on one job, exactly one sees `changed`."""

    job: Job
    changed: bool


@dataclass(frozen=True, slots=True)
class TypeCount:
    type: str
    status: JobStatus
    count: int


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A live (or recently live) node as recorded in the database."""

    node_id: str
    hostname: str
    pid: int
    job_types: tuple[str, ...]
    concurrency: int
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """What a node learns when it renews its liveness.

    `existed` is False when the node had no row: on its first heartbeat, or after the leader
    declared it dead and removed it. The heartbeat (re-)creates the row either way. `owned` is
    every `(job_id, attempt)` the database still has this node running: a local job missing
    from it was taken away and its result will be dropped.
    """

    existed: bool
    owned: frozenset[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class LeaderTerm:
    """One leadership term: a node id plus the database time it was elected."""

    leader_id: str
    elected_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class RescueResult:
    retried: int
    failed: int


@runtime_checkable
class Store(Protocol):
    """What a jobyard database must do. Every write is atomic; every worker write is fenced."""

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        ...

    async def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version. Safe to run concurrently."""
        ...

    async def close(self) -> None: ...

    async def now(self) -> datetime:
        """The database clock."""
        ...

    def for_role(self, role: str) -> Store:
        """A store for one background part of a node (`heartbeat`, `leader`): on PostgreSQL
        its own named connection, so it never waits behind claims; on SQLite the same store."""
        ...

    async def watch(self, on_event: Callable[[str, str], None]) -> None:
        """Report, until cancelled, that jobs may be waiting: `on_event(channel, payload)`.

        PostgreSQL: LISTEN, with channel "jobyard_jobs" (payload: the enqueued types) or
        "jobyard_leader" (the lease was resigned), and "" after each (re)connect. SQLite: a
        cheap check of the file's change counter every 50 ms, reported as channel "".
        These are hints; polling covers anything they miss.
        """
        ...

    async def notify_leader_change(self) -> None:
        """Tell other nodes the lease is free (PostgreSQL); a no-op where nodes cannot hear."""
        ...

    async def notify_jobs(self) -> None:
        """Tell every node that jobs of any type may be due (after a rescue)."""
        ...

    # -- jobs ------------------------------------------------------------------------------
    async def enqueue_job(self, job: NewJob, *, conn: Any = None) -> Job:
        """The seed's `EnqueueJob`. With `conn`, the insert joins that open transaction."""
        ...

    async def enqueue_jobs(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        """Insert many jobs in one statement and one transaction (or in the caller's)."""
        ...

    def enqueue_jobs_sync(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        """`enqueue_jobs` for code without an event loop (a Flask or Django view)."""
        ...

    async def claim_jobs(self, params: ClaimParams) -> list[Job]:
        """The seed's `DequeueJob`, batched: fills up to `max_jobs` slots in one transaction.

        Order: higher priority first, then earlier `run_at`, then lower id. Each claimed job is
        `processing`, owned by `params.node_id`, with `attempt` incremented.
        """
        ...

    async def complete_jobs(
        self, results: Sequence[JobResult], *, now: datetime | None = None
    ) -> set[int]:
        """Apply many results at once; returns the ids whose fence held (the others are stale)."""
        ...

    async def complete_job(self, result: JobResult, *, now: datetime | None = None) -> bool:
        """The seed's `CompleteJob`, fenced: True if the result was applied."""
        ...

    async def complete_and_claim(
        self, results: Sequence[JobResult], params: ClaimParams
    ) -> tuple[set[int], list[Job]]:
        """`complete_jobs(results)` then `claim_jobs(params)`, in one transaction (one statement
        on PostgreSQL, one fsync on SQLite): a busy node's whole cycle. The slots the
        completions free under a limit count at once. A job whose result this call records is
        not claimed by the same call, even when the result makes it due again (a hand-back):
        the next call may take it."""
        ...

    async def get_job(self, job_id: int) -> Job | None: ...

    async def list_jobs(self, flt: JobFilter | None = None) -> list[Job]: ...

    async def count_jobs(self) -> list[TypeCount]: ...

    async def cancel_job(self, job_id: int, *, now: datetime | None = None) -> JobUpdate | None:
        """Cancel a pending job. None when the job does not exist; otherwise the job as it now
        is, and whether this call cancelled it (a job that is not pending is left alone)."""
        ...

    async def retry_job(self, job_id: int, *, now: datetime | None = None) -> JobUpdate | None:
        """Put a failed or cancelled job back to pending with a fresh set of attempts. None
        when the job does not exist; otherwise the job and whether this call requeued it."""
        ...

    # -- nodes -----------------------------------------------------------------------------
    async def heartbeat_node(
        self, node: NodeInfo, lease: timedelta, *, now: datetime | None = None
    ) -> HeartbeatResult:
        """Register or renew `node` for `lease`, and report which jobs it still owns."""
        ...

    async def remove_node(self, node_id: str) -> None: ...

    async def list_nodes(self, *, now: datetime | None = None) -> list[NodeInfo]:
        """Nodes whose liveness has not expired."""
        ...

    async def delete_dead_nodes(
        self, *, term: LeaderTerm | None = None, now: datetime | None = None
    ) -> int:
        """Remove the rows of nodes whose registration expired."""
        ...

    # -- leadership ------------------------------------------------------------------------
    async def try_acquire_leader(
        self,
        node_id: str,
        lease: timedelta,
        *,
        term: LeaderTerm | None = None,
        now: datetime | None = None,
    ) -> LeaderTerm | None:
        """The seed's `TryAcquireLeader`, scoped to a term.

        Without `term`, elect `node_id` if the lease is free or expired. With `term`, renew
        exactly that term. Returns the (new or renewed) term, or None when another term holds.
        """
        ...

    async def resign_leader(self, term: LeaderTerm) -> bool:
        """End `term` at once so a follower can take over; False if it had already ended."""
        ...

    async def get_leader(self, *, now: datetime | None = None) -> LeaderTerm | None: ...

    # -- workspaces and sessions -------------------------------------------------------------
    async def create_workspace(self, workspace: NewWorkspace, job: NewJob) -> tuple[Workspace, Job]:
        """Insert the workspace and its init job in one transaction: both or neither."""
        ...

    async def create_session(self, session: NewSession, job: NewJob) -> tuple[Session, Job]:
        """Insert the session and its init job in one transaction. Raises NotFound (and
        stores nothing) when the workspace does not exist."""
        ...

    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...

    async def get_session(self, session_id: str) -> Session | None: ...

    async def list_workspaces(self, *, limit: int = 50) -> list[Workspace]: ...

    async def list_sessions(
        self, *, workspace_id: str | None = None, limit: int = 50
    ) -> list[Session]: ...

    async def set_workspace_status(
        self,
        workspace_id: str,
        status: EntityStatus,
        *,
        expect: Sequence[EntityStatus],
        error: str | None = None,
    ) -> Workspace | None:
        """Compare-and-set: move to `status` only from one of `expect`; None if it did not."""
        ...

    async def set_session_status(
        self,
        session_id: str,
        status: EntityStatus,
        *,
        expect: Sequence[EntityStatus],
        error: str | None = None,
    ) -> Session | None: ...

    async def finished_per_minute(self, since: datetime) -> list[tuple[datetime, int]]:
        """Jobs that finished (completed or failed) per minute since `since`."""
        ...

    # -- maintenance (leader only) ---------------------------------------------------------
    async def fail_stale_jobs(
        self,
        cutoff: datetime,
        *,
        job_types: Sequence[str] | None = None,
        exclude_types: Sequence[str] = (),
        skip_live_owners: bool = False,
        term: LeaderTerm | None = None,
        now: datetime | None = None,
    ) -> int:
        """The seed's `FailStaleJobs`: fail `processing` jobs started before `cutoff`.

        With `skip_live_owners`, leave jobs whose node is still alive: that node enforces their
        timeout itself and, for a sync executor it cannot interrupt, keeps the job (and its
        slot under the type's limit) until the thread returns.

        With `term`, as for every maintenance operation, the statement is fenced by that
        leader term: it changes nothing (and returns 0) unless the term holds the lease,
        unexpired by the database's clock, and a new election waits until it has committed."""
        ...

    async def prune_jobs(
        self,
        status: JobStatus,
        finished_before: datetime,
        *,
        batch_size: int = 1000,
        term: LeaderTerm | None = None,
    ) -> int:
        """Delete at most `batch_size` jobs in `status` that finished before the cutoff."""
        ...

    async def rescue_orphaned_jobs(
        self, *, term: LeaderTerm | None = None, now: datetime | None = None
    ) -> RescueResult:
        """Jobs `processing` on a node whose liveness expired: retry while attempts remain,
        else fail. A compare-and-set: a job that finished meanwhile is not touched."""
        ...


class StoreBase:
    """Shared single-item forms of the batch operations, so each backend writes only the batch."""

    async def enqueue_jobs(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        raise NotImplementedError

    async def complete_jobs(
        self, results: Sequence[JobResult], *, now: datetime | None = None
    ) -> set[int]:
        raise NotImplementedError

    async def notify_leader_change(self) -> None:
        return None

    async def notify_jobs(self) -> None:
        return None

    async def enqueue_job(self, job: NewJob, *, conn: Any = None) -> Job:
        (created,) = await self.enqueue_jobs([job], conn=conn)
        return created

    async def complete_job(self, result: JobResult, *, now: datetime | None = None) -> bool:
        return result.job_id in await self.complete_jobs([result], now=now)
