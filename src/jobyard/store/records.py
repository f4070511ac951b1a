"""The records that cross the store seam: what goes into the database and what comes back.

Plain frozen dataclasses and enums, shared by the engine and both backends. Parameters that
travel together (a claim, a result) are one record, so an operation's signature stays short.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from jobyard.model import Job, JobStatus

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
