"""The job record, its states and the errors jobyard raises.

The job record and its lifecycle. Everything here is plain data:
the store fills it in, the dispatcher and the user read it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "ConfigError",
    "Job",
    "JobNotFound",
    "JobStatus",
    "JobyardError",
    "NotFound",
    "PayloadError",
    "PayloadTooLarge",
    "PermanentError",
    "Snooze",
    "StoreError",
    "StoreUnavailable",
    "UnknownJobType",
]


class JobStatus(enum.StrEnum):
    """Where a job is in its lifecycle.

    `pending → processing → completed | failed`, plus `cancelled`. A failed attempt
    with attempts left goes back to `pending` with a later `run_at`. `completed`, `failed` and
    `cancelled` are final.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class Job:
    """One job as the store last saw it.

    `attempt` counts runs that have started: 0 while the job has never been claimed, 1 during and
    after the first run. `(id, attempt, owner)` is the fencing token of a running job: a worker's
    result is applied only while all three still match.
    """

    id: int
    type: str
    payload: Any
    status: JobStatus
    priority: int
    attempt: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    owner: str | None


class JobyardError(Exception):
    """Base class of every error jobyard raises on purpose."""


class ConfigError(JobyardError, ValueError):
    """A setting has a value jobyard cannot use. The message names the setting."""


class UnknownJobType(JobyardError, LookupError):
    """A job type was used that was never declared with `Queue.declare` or `register_executor`."""


class PayloadError(JobyardError, ValueError):
    """A payload does not fit its job type's model, or cannot be stored as JSON."""


class PayloadTooLarge(PayloadError):
    """A payload's JSON is larger than the configured maximum."""


class NotFound(JobyardError, LookupError):
    """The job, workspace or session asked for does not exist."""


class JobNotFound(NotFound):
    """No job has the given id."""


class StoreError(JobyardError):
    """The database failed or refused an operation, or the store was asked for something it
    cannot do (a bad URL, a schema newer than this jobyard). The database driver's own error,
    when there was one, is the `__cause__`."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or is busy right now (refused or lost connection, pool
    timeout, a lock held too long): the same call may succeed if retried later."""


class PermanentError(JobyardError):
    """Raise from an executor to fail the job now, without the retries it has left: for
    errors a retry cannot fix (a payload that can never work, a parent that failed)."""


class Snooze(JobyardError):
    """Raise from an executor to run the job again after `seconds`, without counting the
    attempt: for work that must wait on something else (a resource that is not ready yet)."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        if not 0 <= seconds <= 366 * 24 * 3600:
            raise ValueError("snooze for 0 seconds to a year")
        super().__init__(reason or f"snoozed for {seconds:g}s")
        self.seconds = seconds
