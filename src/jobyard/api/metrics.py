"""Prometheus metrics: jobs by state (cluster-wide, read on scrape), throughput and latency
(this node's own runs), and leadership."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from jobyard.model import Job
from jobyard.runtime import Runtime
from jobyard.store.records import Outcome

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """One registry per app, so several apps (and tests) in a process never collide."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Gauge("jobyard_jobs", "Jobs by type and state", ["type", "status"], registry=r)
        self.finished_last_minute = Gauge(
            "jobyard_jobs_finished_last_minute",
            "Jobs completed or failed in the last full minute, cluster-wide",
            registry=r,
        )
        self.finished = Counter(
            "jobyard_attempts_finished",
            "Attempts finished on this node, by outcome",
            ["type", "outcome"],
            registry=r,
        )
        self.wait = Histogram(
            "jobyard_job_wait_seconds",
            "From when a job was due (run_at) to when this node started it",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.run = Histogram(
            "jobyard_job_run_seconds",
            "How long attempts ran on this node",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.is_leader = Gauge("jobyard_is_leader", "1 while this node leads", registry=r)
        self.leader_present = Gauge(
            "jobyard_leader_present", "1 while some node holds the leader lease", registry=r
        )
        self.nodes = Gauge("jobyard_nodes_live", "Nodes whose liveness has not expired", registry=r)
        dispatcher = runtime.dispatcher
        dispatcher.on_job_start.add(self._started)
        dispatcher.on_job_end.add(self._ended)

    def _started(self, job: Job) -> None:
        waited = time.time() - job.run_at.timestamp()
        self.wait.labels(job.type).observe(max(0.0, waited))

    def _ended(self, job: Job, outcome: Outcome, seconds: float) -> None:
        self.finished.labels(job.type, outcome.value).inc()
        self.run.labels(job.type).observe(seconds)

    async def render(self) -> bytes:
        admin = self.runtime.admin
        self.jobs.clear()
        for row in await admin.count_jobs():
            self.jobs.labels(row.type, row.status.value).set(row.count)
        this_minute = datetime.now(UTC).replace(second=0, microsecond=0)
        per_minute = dict(await admin.finished_per_minute(this_minute - timedelta(minutes=1)))
        last = this_minute - timedelta(minutes=1)
        self.finished_last_minute.set(
            sum(n for minute, n in per_minute.items() if minute.timestamp() == last.timestamp())
        )
        self.is_leader.set(1 if self.runtime.dispatcher.is_leader else 0)
        self.leader_present.set(1 if await admin.get_leader() is not None else 0)
        self.nodes.set(len(await admin.list_nodes()))
        return generate_latest(self.registry)
