"""Leader-only maintenance: stale and orphaned jobs recovered quickly and honestly.

Each pass, run by the leader every heartbeat interval:
- rescue jobs whose node stopped heartbeating (back to pending while attempts remain);
- fail jobs processing longer than their timeout (`fail_stale_jobs`) whose own node
  is gone: a live node enforces its jobs' timeouts itself, and a sync executor it cannot
  interrupt keeps its slot until it returns, so the limit is never exceeded;
- remove the rows of dead nodes;
- delete finished jobs past their retention, in small batches, so the table stays bounded and
  no statement holds locks for long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from jobyard.config import Config
from jobyard.model import JobStatus
from jobyard.store.ports import MaintenanceStore
from jobyard.store.records import LeaderTerm

__all__ = ["LeadershipLost", "MaintenanceReport", "run_maintenance"]

log = logging.getLogger("jobyard.maintenance")

PRUNE_BATCH = 1000
# A pass deletes at most this many batches per state; the next pass, a heartbeat later, goes on.
PRUNE_BATCHES_PER_PASS = 20


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    rescued: int
    rescued_failed: int
    stale_failed: int
    dead_nodes: int
    pruned: int = 0


class LeadershipLost(Exception):
    """The pass stopped because this node no longer trusts its term."""


async def run_maintenance(
    store: MaintenanceStore,
    config: Config,
    still_leader: Callable[[], bool] = lambda: True,
    *,
    term: LeaderTerm | None = None,
) -> MaintenanceReport:
    """One pass. `still_leader` is checked before every statement, so a leader that was frozen
    or slowed in the middle of a pass stops as soon as its trust runs out (LeadershipLost).
    Each statement is also fenced by `term` in the database: one sent by a leader that was
    frozen between that check and the send changes nothing once the term has ended, and a new
    term cannot begin while it runs."""

    def check() -> None:
        if not still_leader():
            raise LeadershipLost

    check()
    now = await store.now()
    # A live node enforces its own jobs' timeouts (and holds an overrunning sync job's slot
    # until its thread returns), so the leader fails only stale jobs of nodes that are gone,
    # and only a lease past the timeout.
    slack = config.leader_lease_duration
    overridden = list(config.job_timeouts)
    check()
    stale = await store.fail_stale_jobs(
        now - config.job_timeout - slack,
        exclude_types=overridden,
        skip_live_owners=True,
        term=term,
    )
    for job_type, timeout in config.job_timeouts.items():
        check()
        stale += await store.fail_stale_jobs(
            now - timeout - slack, job_types=[job_type], skip_live_owners=True, term=term
        )
    # After the stale pass: a job that overran its timeout on a node that is gone ends failed
    # with a timeout error; the other jobs of dead nodes are rescued.
    check()
    rescue = await store.rescue_orphaned_jobs(term=term)
    check()
    dead = await store.delete_dead_nodes(term=term)
    pruned = 0
    for status, keep in (
        (JobStatus.COMPLETED, config.retention_completed),
        (JobStatus.CANCELLED, config.retention_cancelled),
        (JobStatus.FAILED, config.retention_failed),
    ):
        for _ in range(PRUNE_BATCHES_PER_PASS):
            check()
            deleted = await store.prune_jobs(status, now - keep, batch_size=PRUNE_BATCH, term=term)
            pruned += deleted
            if deleted < PRUNE_BATCH:
                break
    report = MaintenanceReport(rescue.retried, rescue.failed, stale, dead, pruned)
    if rescue.retried or rescue.failed or stale or dead or pruned:
        log.info(
            "maintenance: %d jobs rescued, %d failed after their node died, %d timed out, "
            "%d dead nodes removed, %d finished jobs pruned",
            rescue.retried,
            rescue.failed,
            stale,
            dead,
            pruned,
        )
    return report
