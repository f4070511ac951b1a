"""What both backends share, so each operation that differs only in dialect is written once.

A backend supplies its named queries (its own `.sql` file), two ways to run one (`_rows` and
`_count`) and the few conversions where its driver differs: how a time or a list travels as a
parameter, and how a time or a payload comes back in a row. `StoreBase` builds every plain
operation from those: reads, operators' actions, nodes, the lease and maintenance. What really
differs between the dialects (enqueue, the dispatch cycle, heartbeats, migrations, wake-ups)
stays in each backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from jobyard.model import Job, JobStatus
from jobyard.store.records import (
    JobFilter,
    JobResult,
    JobUpdate,
    LeaderTerm,
    NewJob,
    NodeInfo,
    RescueResult,
    TypeCount,
)

__all__ = ["StoreBase"]

Row = Sequence[Any]


class StoreBase(ABC):
    """The operations both backends share, over the backend's own queries and drivers."""

    _queries: Mapping[str, str]

    # -- what a backend supplies -----------------------------------------------------------
    @abstractmethod
    async def _rows(
        self, name: str, params: Mapping[str, Any], *, write: bool = False, listing: bool = False
    ) -> list[Row]:
        """Run the named query and return its rows. `write`: it changes data (SQLite runs it in
        a write transaction). `listing`: a possibly long read that must not hold up claims
        (SQLite runs it on its read-only connection)."""

    @abstractmethod
    async def _count(self, name: str, params: Mapping[str, Any]) -> int:
        """Run the named write and return how many rows it changed."""

    @abstractmethod
    def _time(self, value: datetime | None) -> Any:
        """A time as a query parameter; None means the database clock's now."""

    @abstractmethod
    def _list(self, values: Sequence[str]) -> Any:
        """A list of strings as a query parameter."""

    @abstractmethod
    def _moment(self, value: Any) -> datetime:
        """A time column as a timezone-aware datetime."""

    @abstractmethod
    def _payload(self, value: Any) -> Any:
        """The payload column as JSON data."""

    @abstractmethod
    def _types(self, value: Any) -> tuple[str, ...]:
        """A node's job types column as a tuple."""

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

    async def _requeued(self, job: Job) -> None:
        """Called after an operator's retry put `job` back to pending (wake the nodes)."""
        return None

    # -- rows ------------------------------------------------------------------------------
    def _job(self, row: Row) -> Job:
        """A `SELECT *` / `RETURNING *` row of jobyard_jobs, in column order."""
        moment = self._moment
        return Job(
            id=row[0],
            type=row[1],
            payload=self._payload(row[2]),
            status=JobStatus(row[3]),
            priority=row[4],
            attempt=row[5],
            max_attempts=row[6],
            run_at=moment(row[7]),
            created_at=moment(row[8]),
            started_at=None if row[9] is None else moment(row[9]),
            finished_at=None if row[10] is None else moment(row[10]),
            error=row[11],
            owner=row[12],
        )

    def _term(self, row: Row) -> LeaderTerm:
        return LeaderTerm(
            leader_id=row[0], elected_at=self._moment(row[1]), expires_at=self._moment(row[2])
        )

    def _node(self, row: Row) -> NodeInfo:
        return NodeInfo(
            node_id=row[0],
            hostname=row[1],
            pid=row[2],
            job_types=self._types(row[3]),
            concurrency=row[4],
            started_at=self._moment(row[5]),
            heartbeat_at=self._moment(row[6]),
            expires_at=self._moment(row[7]),
        )

    def _fence(self, term: LeaderTerm | None) -> dict[str, Any]:
        """The parameters of a maintenance statement's term fence (queries.sql); none: no fence."""
        if term is None:
            return {"leader": None, "elected_at": None}
        return {"leader": term.leader_id, "elected_at": self._time(term.elected_at)}

    # -- single-item forms -----------------------------------------------------------------
    async def enqueue_job(self, job: NewJob, *, conn: Any = None) -> Job:
        (created,) = await self.enqueue_jobs([job], conn=conn)
        return created

    async def complete_job(self, result: JobResult, *, now: datetime | None = None) -> bool:
        return result.job_id in await self.complete_jobs([result], now=now)

    # -- reads -----------------------------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None:
        rows = await self._rows("get_job", {"id": job_id})
        return self._job(rows[0]) if rows else None

    async def list_jobs(self, flt: JobFilter | None = None) -> list[Job]:
        flt = flt or JobFilter()
        params = {
            "status": None if flt.status is None else flt.status.value,
            "type": flt.type,
            "before_id": flt.before_id,
            "limit": flt.limit,
        }
        return [self._job(r) for r in await self._rows("list_jobs", params, listing=True)]

    async def count_jobs(self) -> list[TypeCount]:
        rows = await self._rows("count_jobs", {}, listing=True)
        return [TypeCount(type=t, status=JobStatus(s), count=n) for t, s, n in rows]

    async def finished_per_minute(self, since: datetime) -> list[tuple[datetime, int]]:
        rows = await self._rows("finished_per_minute", {"since": self._time(since)}, listing=True)
        return [(self._moment(minute), count) for minute, count in rows]

    # -- operators' actions ----------------------------------------------------------------
    async def _update_one(self, name: str, job_id: int, now: datetime | None) -> JobUpdate | None:
        rows = await self._rows(name, {"id": job_id, "now": self._time(now)}, write=True)
        if rows:
            return JobUpdate(self._job(rows[0]), changed=True)
        job = await self.get_job(job_id)
        return None if job is None else JobUpdate(job, changed=False)

    async def cancel_job(self, job_id: int, *, now: datetime | None = None) -> JobUpdate | None:
        return await self._update_one("cancel_job", job_id, now)

    async def retry_job(self, job_id: int, *, now: datetime | None = None) -> JobUpdate | None:
        update = await self._update_one("retry_job", job_id, now)
        if update is not None and update.changed:
            await self._requeued(update.job)
        return update

    # -- nodes -----------------------------------------------------------------------------
    async def remove_node(self, node_id: str) -> None:
        await self._count("remove_node", {"node_id": node_id})

    async def list_nodes(self, *, now: datetime | None = None) -> list[NodeInfo]:
        return [self._node(r) for r in await self._rows("list_nodes", {"now": self._time(now)})]

    async def delete_dead_nodes(
        self, *, term: LeaderTerm | None = None, now: datetime | None = None
    ) -> int:
        return await self._count("delete_dead_nodes", {"now": self._time(now), **self._fence(term)})

    # -- leadership ------------------------------------------------------------------------
    async def try_acquire_leader(
        self,
        node_id: str,
        lease: timedelta,
        *,
        term: LeaderTerm | None = None,
        now: datetime | None = None,
    ) -> LeaderTerm | None:
        params: dict[str, Any] = {
            "node_id": node_id,
            "now": self._time(now),
            "lease": lease.total_seconds(),
        }
        if term is not None:
            params["elected_at"] = self._time(term.elected_at)
        name = "elect_leader" if term is None else "renew_leader"
        rows = await self._rows(name, params, write=True)
        return self._term(rows[0]) if rows else None

    async def resign_leader(self, term: LeaderTerm) -> bool:
        params = {"node_id": term.leader_id, "elected_at": self._time(term.elected_at)}
        return await self._count("resign_leader", params) == 1

    async def get_leader(self, *, now: datetime | None = None) -> LeaderTerm | None:
        rows = await self._rows("get_leader", {"now": self._time(now)})
        return self._term(rows[0]) if rows else None

    # -- maintenance -----------------------------------------------------------------------
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
        params = {
            "skip_live": skip_live_owners,
            "cutoff": self._time(cutoff),
            "now": self._time(now),
            "types": None if job_types is None else self._list(job_types),
            "exclude_types": self._list(exclude_types),
            **self._fence(term),
        }
        return len(await self._rows("fail_stale_jobs", params, write=True))

    async def prune_jobs(
        self,
        status: JobStatus,
        finished_before: datetime,
        *,
        batch_size: int = 1000,
        term: LeaderTerm | None = None,
    ) -> int:
        params = {
            "status": status.value,
            "before": self._time(finished_before),
            "batch": batch_size,
            "now": self._time(None),
            **self._fence(term),
        }
        return await self._count("prune_jobs", params)

    async def rescue_orphaned_jobs(
        self, *, term: LeaderTerm | None = None, now: datetime | None = None
    ) -> RescueResult:
        params = {"now": self._time(now), **self._fence(term)}
        statuses = [r[0] for r in await self._rows("rescue_orphaned_jobs", params, write=True)]
        return RescueResult(retried=statuses.count("pending"), failed=statuses.count("failed"))
