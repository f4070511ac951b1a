"""Leader-only maintenance: the seed's `cleanupStaleJobs`, made fast and honest.

Each pass, run by the leader every heartbeat interval:
- rescue jobs whose node stopped heartbeating (back to pending while attempts remain);
- fail jobs processing longer than their timeout (the seed's `FailStaleJobs`), for the case
  where their own node is gone or stuck and cannot cancel them itself;
- remove the rows of dead nodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from jobyard.config import Config
from jobyard.store.base import Store

__all__ = ["MaintenanceReport", "run_maintenance"]

log = logging.getLogger("jobyard.maintenance")


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    rescued: int
    rescued_failed: int
    stale_failed: int
    dead_nodes: int


async def run_maintenance(store: Store, config: Config) -> MaintenanceReport:
    rescue = await store.rescue_orphaned_jobs()
    now = await store.now()
    # The owning node cancels a job at its timeout; the leader steps in only a lease later, so
    # it acts on jobs whose node could not.
    slack = config.leader_lease_duration
    overridden = list(config.job_timeouts)
    stale = await store.fail_stale_jobs(now - config.job_timeout - slack, exclude_types=overridden)
    for job_type, timeout in config.job_timeouts.items():
        stale += await store.fail_stale_jobs(now - timeout - slack, job_types=[job_type])
    dead = await store.delete_dead_nodes()
    report = MaintenanceReport(rescue.retried, rescue.failed, stale, dead)
    if rescue.retried or rescue.failed or stale or dead:
        log.info(
            "maintenance: %d jobs rescued, %d failed after their node died, %d timed out, "
            "%d dead nodes removed",
            rescue.retried,
            rescue.failed,
            stale,
            dead,
        )
    return report
