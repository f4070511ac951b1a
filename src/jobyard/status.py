"""What an operator wants to know about a cluster, read from the database in one place.

Every node writes its liveness and the types it serves; the status joins that with the job
counts, so it shows types whose pending jobs no live node serves (they wait until one does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobyard.dispatcher.limits import Limits
from jobyard.model import JobStatus
from jobyard.store.ports import AdminStore
from jobyard.store.records import LeaderTerm, NodeInfo

__all__ = ["ClusterStatus", "TypeStatus", "cluster_status"]


@dataclass(frozen=True, slots=True)
class TypeStatus:
    """One job type: its jobs by state, its cluster-wide limit and whether any node serves it."""

    type: str
    counts: dict[JobStatus, int]
    limit: int | None
    served: bool

    @property
    def running(self) -> int:
        return self.counts.get(JobStatus.PROCESSING, 0)

    @property
    def pending(self) -> int:
        return self.counts.get(JobStatus.PENDING, 0)


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    leader: LeaderTerm | None
    nodes: list[NodeInfo]
    types: list[TypeStatus] = field(default_factory=list)

    @property
    def unserved(self) -> list[str]:
        """Types with pending jobs that no live node has an executor for."""
        return [t.type for t in self.types if t.pending and not t.served]


async def cluster_status(store: AdminStore, limits: Limits | None = None) -> ClusterStatus:
    """Read the leader, the live nodes and the per-type counts and limits."""
    limits = limits if limits is not None else Limits()
    leader = await store.get_leader()
    nodes = await store.list_nodes()
    served = {t for node in nodes for t in node.job_types}
    counts: dict[str, dict[JobStatus, int]] = {}
    for row in await store.count_jobs():
        counts.setdefault(row.type, {})[row.status] = row.count
    names = sorted(set(counts) | served | set(limits.limits))
    types = [
        TypeStatus(
            type=name,
            counts=counts.get(name, {}),
            limit=limits.limit_for(name),
            served=name in served,
        )
        for name in names
    ]
    return ClusterStatus(leader=leader, nodes=nodes, types=types)
