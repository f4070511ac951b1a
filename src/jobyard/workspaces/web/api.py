"""The platform's JSON API: workspaces and sessions, beside the engine's jobs.

Every refusal happens before anything is written: a bad name or template answers 422 with the
reason, a missing workspace 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from jobyard.api.routes import MAX_PAGE, Problem, refused
from jobyard.api.schemas import JobOut, Record, RequestBody
from jobyard.model import NotFound, PayloadError, UnknownJobType
from jobyard.workspaces.entities import EntityStatus
from jobyard.workspaces.runtime import WorkspaceRuntime

__all__ = [
    "SessionCreated",
    "SessionOut",
    "WorkspaceCreate",
    "WorkspaceCreated",
    "WorkspaceOut",
    "workspace_router",
]


class WorkspaceCreate(RequestBody):
    name: str = Field(min_length=1, max_length=64, examples=["my-project"])
    template: str | None = Field(default=None, min_length=1, max_length=255)


class WorkspaceOut(Record):
    id: str
    name: str
    template: str | None
    status: EntityStatus
    error: str | None
    job_id: int | None
    created_at: datetime
    updated_at: datetime


class SessionOut(Record):
    id: str
    workspace_id: str
    status: EntityStatus
    error: str | None
    job_id: int | None
    created_at: datetime
    updated_at: datetime


class WorkspaceCreated(BaseModel):
    workspace: WorkspaceOut
    job: JobOut


class SessionCreated(BaseModel):
    session: SessionOut
    job: JobOut


# Ids the services create: anything else (NUL, quotes, ...) is refused before it reaches the
# database.
EntityId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_]{1,64}$")]
NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": Problem, "description": "No such workspace or session"}
}


def workspace_router(runtime: WorkspaceRuntime) -> APIRouter:
    """The platform's routes on `runtime`'s services and store. Paths are relative to `/api`,
    where the engine mounts them behind its token, limits and cross-site guard."""
    router = APIRouter()
    workspaces, sessions, entities = runtime.workspaces, runtime.sessions, runtime.workspace_store

    @router.post(
        "/workspaces", status_code=status.HTTP_202_ACCEPTED, response_model=WorkspaceCreated
    )
    async def create_workspace(body: WorkspaceCreate) -> WorkspaceCreated:
        """Record a workspace and enqueue its `workspace_init` job, in one transaction."""
        try:
            workspace, job = await workspaces.create(body.name, body.template)
        except (PayloadError, UnknownJobType) as exc:
            raise refused(exc) from None
        return WorkspaceCreated(workspace=WorkspaceOut.of(workspace), job=JobOut.of(job))

    @router.get("/workspaces", response_model=list[WorkspaceOut])
    async def list_workspaces(
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> list[WorkspaceOut]:
        return [WorkspaceOut.of(w) for w in await entities.list_workspaces(limit=limit)]

    @router.get("/workspaces/{workspace_id}", response_model=WorkspaceOut, responses=NOT_FOUND)
    async def get_workspace(workspace_id: EntityId) -> WorkspaceOut:
        workspace = await entities.get_workspace(workspace_id)
        if workspace is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"workspace {workspace_id!r} does not exist"
            )
        return WorkspaceOut.of(workspace)

    @router.post(
        "/workspaces/{workspace_id}/sessions",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=SessionCreated,
        responses=NOT_FOUND,
    )
    async def create_session(workspace_id: EntityId) -> SessionCreated:
        """Record a session and enqueue its `session_init` job, in one transaction."""
        try:
            session, job = await sessions.create(workspace_id)
        except (NotFound, PayloadError) as exc:
            raise refused(exc) from None
        return SessionCreated(session=SessionOut.of(session), job=JobOut.of(job))

    @router.get("/sessions/{session_id}", response_model=SessionOut, responses=NOT_FOUND)
    async def get_session(session_id: EntityId) -> SessionOut:
        session = await entities.get_session(session_id)
        if session is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"session {session_id!r} does not exist")
        return SessionOut.of(session)

    return router
