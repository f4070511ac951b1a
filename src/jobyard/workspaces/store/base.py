"""What the platform's two backends share: every operation, written once over each dialect's
named queries and value conversions (as the engine's `StoreBase` does for jobs)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from jobyard.model import Job, NotFound
from jobyard.store.records import NewJob
from jobyard.workspaces.entities import (
    EntityStatus,
    NewSession,
    NewWorkspace,
    Session,
    Workspace,
)

__all__ = ["WorkspaceStoreBase"]

Row = Sequence[Any]


class WorkspaceStoreBase(ABC):
    """`WorkspaceStore` over a dialect's primitives. The platform's tables are migrated on
    first use (the "workspaces" line), so an engine-only database never gets them."""

    _migrated = False

    # -- what a dialect supplies -----------------------------------------------------------
    @abstractmethod
    async def migrate(self) -> int: ...

    @abstractmethod
    async def _rows(
        self, name: str, params: Mapping[str, Any], *, write: bool = False, listing: bool = False
    ) -> list[Row]:
        """Run the named query; `write` in a write transaction, `listing` beside the writes."""

    @abstractmethod
    async def _create(self, name: str, params: Mapping[str, Any], job: NewJob) -> tuple[Row, Job]:
        """Insert `job` and then the named row, which gets `job_id`, in one transaction. No
        row back rolls the transaction back and raises NotFound."""

    @abstractmethod
    def _now(self) -> Any:
        """The `now` parameter of the statements that stamp a row."""

    @abstractmethod
    def _list(self, values: Sequence[str]) -> Any: ...

    @abstractmethod
    def _moment(self, value: Any) -> datetime: ...

    # -- rows ------------------------------------------------------------------------------
    def _workspace(self, row: Row) -> Workspace:
        return Workspace(
            id=row[0],
            name=row[1],
            template=row[2],
            status=EntityStatus(row[3]),
            error=row[4],
            job_id=row[5],
            created_at=self._moment(row[6]),
            updated_at=self._moment(row[7]),
        )

    def _session(self, row: Row) -> Session:
        return Session(
            id=row[0],
            workspace_id=row[1],
            status=EntityStatus(row[2]),
            error=row[3],
            job_id=row[4],
            created_at=self._moment(row[5]),
            updated_at=self._moment(row[6]),
        )

    async def _ready(self) -> None:
        if not self._migrated:
            await self.migrate()
            self._migrated = True

    # -- operations ------------------------------------------------------------------------
    async def create_workspace(self, workspace: NewWorkspace, job: NewJob) -> tuple[Workspace, Job]:
        await self._ready()
        params = {
            "id": workspace.id,
            "name": workspace.name,
            "template": workspace.template,
            "now": self._now(),
        }
        row, created = await self._create("insert_workspace", params, job)
        return self._workspace(row), created

    async def create_session(self, session: NewSession, job: NewJob) -> tuple[Session, Job]:
        await self._ready()
        params = {"id": session.id, "workspace_id": session.workspace_id, "now": self._now()}
        try:
            row, created = await self._create("insert_session", params, job)
        except NotFound:
            raise NotFound(f"workspace {session.workspace_id!r} does not exist") from None
        return self._session(row), created

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        await self._ready()
        rows = await self._rows("get_workspace", {"id": workspace_id})
        return self._workspace(rows[0]) if rows else None

    async def get_session(self, session_id: str) -> Session | None:
        await self._ready()
        rows = await self._rows("get_session", {"id": session_id})
        return self._session(rows[0]) if rows else None

    async def list_workspaces(self, *, limit: int = 50) -> list[Workspace]:
        await self._ready()
        rows = await self._rows("list_workspaces", {"limit": limit}, listing=True)
        return [self._workspace(r) for r in rows]

    async def list_sessions(
        self, *, workspace_id: str | None = None, limit: int = 50
    ) -> list[Session]:
        await self._ready()
        params = {"workspace_id": workspace_id, "limit": limit}
        return [self._session(r) for r in await self._rows("list_sessions", params, listing=True)]

    async def _set_status(
        self,
        name: str,
        entity_id: str,
        status: EntityStatus,
        expect: Sequence[EntityStatus],
        error: str | None,
    ) -> Row | None:
        await self._ready()
        params = {
            "id": entity_id,
            "status": status.value,
            "error": error,
            "expect": self._list([e.value for e in expect]),
            "now": self._now(),
        }
        rows = await self._rows(name, params, write=True)
        return rows[0] if rows else None

    async def set_workspace_status(
        self,
        workspace_id: str,
        status: EntityStatus,
        *,
        expect: Sequence[EntityStatus],
        error: str | None = None,
    ) -> Workspace | None:
        row = await self._set_status("set_workspace_status", workspace_id, status, expect, error)
        return None if row is None else self._workspace(row)

    async def set_session_status(
        self,
        session_id: str,
        status: EntityStatus,
        *,
        expect: Sequence[EntityStatus],
        error: str | None = None,
    ) -> Session | None:
        row = await self._set_status("set_session_status", session_id, status, expect, error)
        return None if row is None else self._session(row)
