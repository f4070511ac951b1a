"""JobAdmin: the one door through which operators read jobs and act on them.

The HTTP API, the dashboard and the command line all call this class and nothing below it for
these operations, so "retry" and "cancel" mean the same everywhere: each is one compare-and-set
in the database, and the answer says whether *this* call changed the job. Of fifty concurrent
retries of one failed job, exactly one reports a change; the other forty-nine learn that the job
is already pending.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from jobyard.dispatcher.limits import Limits
from jobyard.model import Job, JobNotFound, JobStatus
from jobyard.status import ClusterStatus, cluster_status
from jobyard.store.ports import AdminStore
from jobyard.store.records import JobFilter, JobUpdate, LeaderTerm, NodeInfo, TypeCount

__all__ = ["JobAction", "JobAdmin"]

MAX_JOB_ID: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class JobAction:
    """What an operator's action did: the job as it now is, whether this call changed it, and
    one sentence saying so (what a front end shows, or the reason it refuses)."""

    job: Job
    changed: bool
    message: str


class JobAdmin:
    """Reads and operator actions on the jobs of one store.

    `on_requeue`, when given, is called after a retry put a job back to pending, so the local
    dispatcher can run it at once instead of at its next poll (other nodes are woken by the
    store, as for an enqueue).
    """

    def __init__(
        self,
        store: AdminStore,
        *,
        limits: Limits | None = None,
        on_requeue: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.limits = limits if limits is not None else Limits()
        self._on_requeue = on_requeue

    # -- reads -----------------------------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None:
        """The job, or None when there is no job with this id."""
        if not 1 <= job_id <= MAX_JOB_ID:
            return None
        return await self.store.get_job(job_id)

    async def list_jobs(self, flt: JobFilter | None = None) -> list[Job]:
        """A page of jobs, newest first (see `JobFilter`)."""
        return await self.store.list_jobs(flt)

    async def count_jobs(self) -> list[TypeCount]:
        """How many jobs each type has in each state."""
        return await self.store.count_jobs()

    async def cluster_status(self) -> ClusterStatus:
        """The leader, the live nodes and, per type, counts, limit and whether it is served."""
        return await cluster_status(self.store, self.limits)

    async def get_leader(self) -> LeaderTerm | None:
        """The leader's term, or None while no node holds the lease."""
        return await self.store.get_leader()

    async def list_nodes(self) -> list[NodeInfo]:
        """The nodes whose liveness has not expired."""
        return await self.store.list_nodes()

    async def finished_per_minute(self, since: datetime) -> list[tuple[datetime, int]]:
        """Jobs finished (completed or failed) per minute since `since`, cluster-wide."""
        return await self.store.finished_per_minute(since)

    async def now(self) -> datetime:
        """The database's clock: the reference for ages, so they agree with the stored times
        whatever this host's clock says. Also a cheap check that the database answers."""
        return await self.store.now()

    # -- actions ---------------------------------------------------------------------------
    async def retry(self, job_id: int) -> bool:
        """Put a failed or cancelled job back to pending with fresh attempts. True if this call
        did; False if the job was in any other state (already pending included). Raises
        JobNotFound when there is no such job."""
        return (await self.retry_job(job_id)).changed

    async def cancel(self, job_id: int) -> bool:
        """Cancel a pending job. True if this call did; False if the job was in any other state
        (already cancelled included). Raises JobNotFound when there is no such job."""
        return (await self.cancel_job(job_id)).changed

    async def retry_job(self, job_id: int) -> JobAction:
        """`retry`, with the job and a sentence for the operator."""
        update = await self._found(job_id, self.store.retry_job)
        job = update.job
        if update.changed:
            if self._on_requeue is not None:
                self._on_requeue()
            return JobAction(job, True, f"job {job.id} is pending again")
        if job.status is JobStatus.PENDING:
            return JobAction(job, False, f"job {job.id} is already pending")
        return JobAction(
            job,
            False,
            f"job {job.id} is {job.status.value}; only failed or cancelled jobs can be retried",
        )

    async def cancel_job(self, job_id: int) -> JobAction:
        """`cancel`, with the job and a sentence for the operator."""
        update = await self._found(job_id, self.store.cancel_job)
        job = update.job
        if update.changed:
            return JobAction(job, True, f"job {job.id} cancelled")
        if job.status is JobStatus.CANCELLED:
            return JobAction(job, False, f"job {job.id} is already cancelled")
        return JobAction(
            job,
            False,
            f"job {job.id} is {job.status.value}; only pending jobs can be cancelled",
        )

    @staticmethod
    async def _found(job_id: int, act: Callable[[int], Awaitable[JobUpdate | None]]) -> JobUpdate:
        update = await act(job_id) if 1 <= job_id <= MAX_JOB_ID else None
        if update is None:
            raise JobNotFound(f"job {job_id} does not exist")
        return update
