"""The store seam as one module, for code that has not moved to the role-shaped ports yet.

The records live in `jobyard.store.records`, the protocols in `jobyard.store.ports` and the
backends' shared base in `jobyard.store.backend`. `Store` here adds the workspace platform's
persistence, which is moving out of the engine's seam.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from jobyard.model import Job
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
from jobyard.workspaces.entities import (
    EntityStatus,
    NewSession,
    NewWorkspace,
    Session,
    Workspace,
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


@runtime_checkable
class Store(ports.Store, Protocol):
    """`jobyard.store.ports.Store`, plus the workspaces and sessions."""

    async def create_workspace(self, workspace: NewWorkspace, job: NewJob) -> tuple[Workspace, Job]:
        """Insert the workspace and its init job in one transaction: both or neither."""
        ...

    async def create_session(self, session: NewSession, job: NewJob) -> tuple[Session, Job]:
        """Insert the session and its init job in one transaction. Raises NotFound (and
        stores nothing) when the workspace does not exist."""
        ...

    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...

    async def get_session(self, session_id: str) -> Session | None: ...

    async def list_workspaces(self, *, limit: int = 50) -> list[Workspace]: ...

    async def list_sessions(
        self, *, workspace_id: str | None = None, limit: int = 50
    ) -> list[Session]: ...

    async def set_workspace_status(
        self,
        workspace_id: str,
        status: EntityStatus,
        *,
        expect: Sequence[EntityStatus],
        error: str | None = None,
    ) -> Workspace | None:
        """Compare-and-set: move to `status` only from one of `expect`; None if it did not."""
        ...

    async def set_session_status(
        self,
        session_id: str,
        status: EntityStatus,
        *,
        expect: Sequence[EntityStatus],
        error: str | None = None,
    ) -> Session | None: ...
