"""The store seam as one module, for code that has not moved to the role-shaped ports yet.

The records live in `jobyard.store.records`, the protocols in `jobyard.store.ports` and the
backends' shared base in `jobyard.store.backend`."""

from __future__ import annotations

from jobyard.store import ports
from jobyard.store.backend import StoreBase
from jobyard.store.ports import (
    AdminStore,
    DispatchStore,
    LeaderStore,
    MaintenanceStore,
    QueueStore,
    SchemaStore,
)
from jobyard.store.records import (
    CHANNEL_JOBS,
    CHANNEL_LEADER,
    ClaimParams,
    HeartbeatResult,
    JobFilter,
    JobResult,
    JobUpdate,
    LeaderTerm,
    NewJob,
    NodeInfo,
    Outcome,
    RescueResult,
    TypeCount,
)

__all__ = [
    "CHANNEL_JOBS",
    "CHANNEL_LEADER",
    "AdminStore",
    "ClaimParams",
    "DispatchStore",
    "HeartbeatResult",
    "JobFilter",
    "JobResult",
    "JobUpdate",
    "LeaderStore",
    "LeaderTerm",
    "MaintenanceStore",
    "NewJob",
    "NodeInfo",
    "Outcome",
    "QueueStore",
    "RescueResult",
    "SchemaStore",
    "Store",
    "StoreBase",
    "TypeCount",
]


Store = ports.Store
