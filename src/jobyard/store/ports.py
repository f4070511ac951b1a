"""The store seam, shaped by role: each part of jobyard sees only the operations it uses.

- `QueueStore`: enqueueing (the `Queue`).
- `DispatchStore`: everything a node does: the dispatch cycle, heartbeats, the leader lease and
  maintenance (the `Dispatcher`, its elector and its maintenance pass).
- `AdminStore`: reads and operators' actions (`JobAdmin`, behind the API, dashboard and CLI).
- `SchemaStore`: migrating and closing.

`Store` is all of them: what `open_store` returns, and what each backend implements. One
conformance suite runs against both backends. The backends own the SQL and the atomicity; the
engine owns the policy (when to retry, how long to back off, which types to claim). A backend
turns its driver's errors into `StoreError` subclasses, so nothing above this seam names a
database driver.

Time: every time-dependent operation takes an optional `now`. When it is None the database's own
clock is used (on SQLite, which only ever serves one host, that is the host clock). Tests pass
`now` to move time without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from jobyard.model import Job, JobStatus
from jobyard.store.records import (
    ClaimParams,
    HeartbeatResult,
    JobFilter,
    JobResult,
    JobUpdate,
    LeaderTerm,
    NewJob,
    NodeInfo,
    RescueResult,
    TypeCount,
)

__all__ = [
    "ENGINE_LINE",
    "AdminStore",
    "DispatchStore",
    "LeaderStore",
    "MaintenanceStore",
    "QueueStore",
    "SchemaStore",
    "Store",
]


# The engine's migration line; an application with tables of its own has a line of its own.
ENGINE_LINE = "jobyard"


class SchemaStore(Protocol):
    """The schema and the connections: what opening and closing a store needs."""

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        ...

    async def migrate(self) -> int:
        """Create or upgrade jobyard's own tables (the engine's migration line); returns its
        version. Safe to run concurrently, from many processes."""
        ...

    async def migrate_line(self, line: str, package: str) -> int:
        """Apply the missing migrations of another migration line: the `NNNN_name.sql` files
        of `package`, for an application that keeps its own tables beside jobyard's. Each line
        is versioned on its own; returns the line's version. Safe to run concurrently."""
        ...

    async def close(self) -> None: ...

    async def check_reachable(self, within: float = 5.0) -> None:
        """Raise StoreUnavailable, with the driver's reason, when the database cannot be
        reached within about `within` seconds; a quick check before work that would otherwise
        wait for a pool's longer timeout. (SQLite has nothing to reach.)"""
        ...


class QueueStore(Protocol):
    """What `Queue` needs: inserting jobs, alone, in a batch, or inside the caller's own
    transaction."""

    async def enqueue_job(self, job: NewJob, *, conn: Any = None) -> Job:
        """Insert one job. With `conn`, the insert joins that open transaction."""
        ...

    async def enqueue_jobs(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        """Insert many jobs in one statement and one transaction (or in the caller's)."""
        ...

    def enqueue_jobs_sync(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        """`enqueue_jobs` for code without an event loop (a Flask or Django view)."""
        ...


class LeaderStore(Protocol):
    """What the elector needs: the single-row leader lease, compared with the database clock."""

    async def try_acquire_leader(
        self,
        node_id: str,
        lease: timedelta,
        *,
        term: LeaderTerm | None = None,
        now: datetime | None = None,
    ) -> LeaderTerm | None:
        """Take or renew the leader lease, scoped to a term.

        Without `term`, elect `node_id` if the lease is free or expired. With `term`, renew
        exactly that term. Returns the (new or renewed) term, or None when another term holds.
        """
        ...

    async def resign_leader(self, term: LeaderTerm) -> bool:
        """End `term` at once so a follower can take over; False if it had already ended."""
        ...

    async def get_leader(self, *, now: datetime | None = None) -> LeaderTerm | None: ...

    async def notify_leader_change(self) -> None:
        """Tell other nodes the lease is free (PostgreSQL); a no-op where nodes cannot hear."""
        ...


class MaintenanceStore(Protocol):
    """What the leader's maintenance pass needs. Every operation takes the leader's `term`
    and changes nothing unless that term still holds the lease."""

    async def now(self) -> datetime:
        """The database clock."""
        ...

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
        """Fail `processing` jobs started before `cutoff`.

        With `skip_live_owners`, leave jobs whose node is still alive: that node enforces their
        timeout itself and, for a sync executor it cannot interrupt, keeps the job (and its
        slot under the type's limit) until the thread returns.

        With `term`, as for every maintenance operation, the statement is fenced by that
        leader term: it changes nothing (and returns 0) unless the term holds the lease,
        unexpired by the database's clock, and a new election waits until it has committed."""
        ...

    async def rescue_orphaned_jobs(
        self, *, term: LeaderTerm | None = None, now: datetime | None = None
    ) -> RescueResult:
        """Jobs `processing` on a node whose liveness expired: retry while attempts remain,
        else fail. A compare-and-set: a job that finished meanwhile is not touched."""
        ...

    async def delete_dead_nodes(
        self, *, term: LeaderTerm | None = None, now: datetime | None = None
    ) -> int:
        """Remove the rows of nodes whose registration expired."""
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


class DispatchStore(QueueStore, LeaderStore, MaintenanceStore, Protocol):
    """What a node needs: the dispatch cycle, its heartbeat, the lease and maintenance. Every
    write is atomic; every worker write is fenced by `(id, attempt, owner)`."""

    def for_role(self, role: str) -> DispatchStore:
        """A store for one background part of a node (`heartbeat`, `leader`): on PostgreSQL
        its own named connection, so it never waits behind claims; on SQLite the same store."""
        ...

    async def watch(self, on_event: Callable[[str, str], None]) -> None:
        """Report, until cancelled, that jobs may be waiting: `on_event(channel, payload)`.

        PostgreSQL: LISTEN, with channel "jobyard_jobs" (payload: the enqueued types) or
        "jobyard_leader" (the lease was resigned), and "" after each (re)connect. SQLite: a
        cheap check of the file's change counter every 25 ms, reported as channel "".
        These are hints; polling covers anything they miss.
        """
        ...

    async def notify_jobs(self) -> None:
        """Tell every node that jobs of any type may be due (after a rescue)."""
        ...

    async def claim_jobs(self, params: ClaimParams) -> list[Job]:
        """Claim due jobs: fills up to `max_jobs` slots in one transaction.

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
        """Record one result, fenced: True if the result was applied."""
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

    async def heartbeat_node(
        self, node: NodeInfo, lease: timedelta, *, now: datetime | None = None
    ) -> HeartbeatResult:
        """Register or renew `node` for `lease`, and report which jobs it still owns."""
        ...

    async def remove_node(self, node_id: str) -> None: ...

    async def close(self) -> None: ...


class AdminStore(Protocol):
    """Reads and operators' actions, for `JobAdmin`. Listings and counts may run beside the
    dispatch cycles (on SQLite on a read-only connection of their own), never ahead of them."""

    async def now(self) -> datetime:
        """The database clock."""
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

    async def list_nodes(self, *, now: datetime | None = None) -> list[NodeInfo]:
        """Nodes whose liveness has not expired."""
        ...

    async def get_leader(self, *, now: datetime | None = None) -> LeaderTerm | None: ...

    async def finished_per_minute(self, since: datetime) -> list[tuple[datetime, int]]:
        """Jobs that finished (completed or failed) per minute since `since`."""
        ...


@runtime_checkable
class Store(DispatchStore, AdminStore, SchemaStore, Protocol):
    """A jobyard database: every role's operations. Both backends implement it."""
