"""What both backends share, so each writes an operation once.

`StoreBase` gives the single-item forms of the batch operations, so a backend implements only
the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobyard.model import Job
from jobyard.store.records import JobResult, NewJob

__all__ = ["StoreBase"]


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
