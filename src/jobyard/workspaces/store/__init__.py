"""The platform's persistence: workspaces and sessions, in the same database as the jobs.

`WorkspaceStore` is what the two services need, and nothing else. Each dialect implements it
beside its own SQL (`sqlite/`, `postgres/`), on top of the engine's store: its rows live in the
same database, so creating a workspace and enqueuing its init job commit together or not at
all. Its tables are its own migration line ("workspaces"), applied on first use: a database
that only ever served the engine has none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from jobyard.model import Job, StoreError
from jobyard.store.ports import Store
from jobyard.store.records import NewJob
from jobyard.workspaces.entities import (
    EntityStatus,
    NewSession,
    NewWorkspace,
    Session,
    Workspace,
)

__all__ = ["WORKSPACES_LINE", "WorkspaceStore", "open_workspace_store"]

# The platform's migration line, versioned apart from the engine's.
WORKSPACES_LINE = "workspaces"


class WorkspaceStore(Protocol):
    """Workspaces and sessions. Every write is atomic; status changes are compare-and-set."""

    async def migrate(self) -> int:
        """Create or upgrade the platform's tables; returns its line's version."""
        ...

    async def create_workspace(self, workspace: NewWorkspace, job: NewJob) -> tuple[Workspace, Job]:
        """Insert the workspace and its init job in one transaction: both or neither."""
        ...

    async def create_session(self, session: NewSession, job: NewJob) -> tuple[Session, Job]:
        """Insert the session and its init job in one transaction. Raises NotFound (and
        stores nothing) when the workspace does not exist."""
        ...

    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...

    async def get_session(self, session_id: str) -> Session | None: ...

    async def list_workspaces(self, *, limit: int = 50) -> list[Workspace]:
        """The newest workspaces first."""
        ...

    async def list_sessions(
        self, *, workspace_id: str | None = None, limit: int = 50
    ) -> list[Session]:
        """The newest sessions first, of one workspace or of all."""
        ...

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
    ) -> Session | None:
        """Compare-and-set, as `set_workspace_status`."""
        ...


def open_workspace_store(store: Store) -> WorkspaceStore:
    """The platform's store on the same database as the engine's `store`."""
    if store.dialect == "sqlite":
        from jobyard.store.sqlite.store import SQLiteStore
        from jobyard.workspaces.store.sqlite.store import SQLiteWorkspaceStore

        if isinstance(store, SQLiteStore):
            return SQLiteWorkspaceStore(store)
    elif store.dialect == "postgresql":
        from jobyard.store.postgres.store import PostgresStore
        from jobyard.workspaces.store.postgres.store import PostgresWorkspaceStore

        if isinstance(store, PostgresStore):
            return PostgresWorkspaceStore(store)
    raise StoreError(f"workspaces need one of jobyard's own stores, not {store!r}")
