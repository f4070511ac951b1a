"""The platform's JSON API: workspaces and sessions, beside the engine's jobs.

Every refusal happens before anything is written: a bad name or template answers 422 with the
reason, a missing workspace 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field

from jobyard.api.routes import MAX_PAGE, documented, refused
from jobyard.api.schemas import JobOut, Record, RequestBody
from jobyard.api.security import require_token
from jobyard.model import NotFound, PayloadError, UnknownJobType
from jobyard.workspaces.entities import EntityStatus
from jobyard.workspaces.runtime import WorkspaceRuntime

__all__ = [
    "SessionCreated",
    "SessionOut",
    "WorkspaceCreate",
    "WorkspaceCreated",
    "WorkspaceOut",
    "router",
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


router = APIRouter(
    prefix="/api",
    dependencies=[Depends(require_token)],
    responses=documented(401, 413, 422),
)

# Ids the services create: anything else (NUL, quotes, ...) is refused before it reaches the
# database.
EntityId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_]{1,64}$")]


def runtime(request: Request) -> WorkspaceRuntime:
    rt: WorkspaceRuntime = request.app.state.runtime
    return rt


Rt = Annotated[WorkspaceRuntime, Depends(runtime)]


@router.post("/workspaces", status_code=status.HTTP_202_ACCEPTED, response_model=WorkspaceCreated)
async def create_workspace(body: WorkspaceCreate, rt: Rt) -> WorkspaceCreated:
    """Record a workspace and enqueue its `workspace_init` job, in one transaction."""
    try:
        workspace, job = await rt.workspaces.create(body.name, body.template)
    except (PayloadError, UnknownJobType) as exc:
        raise refused(exc) from None
    return WorkspaceCreated(workspace=WorkspaceOut.of(workspace), job=JobOut.of(job))


@router.get("/workspaces", response_model=list[WorkspaceOut])
async def list_workspaces(
    rt: Rt, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50
) -> list[WorkspaceOut]:
    return [WorkspaceOut.of(w) for w in await rt.workspace_store.list_workspaces(limit=limit)]


@router.get("/workspaces/{workspace_id}", response_model=WorkspaceOut, responses=documented(404))
async def get_workspace(workspace_id: EntityId, rt: Rt) -> WorkspaceOut:
    workspace = await rt.workspace_store.get_workspace(workspace_id)
    if workspace is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"workspace {workspace_id!r} does not exist")
    return WorkspaceOut.of(workspace)


@router.post(
    "/workspaces/{workspace_id}/sessions",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SessionCreated,
    responses=documented(404),
)
async def create_session(workspace_id: EntityId, rt: Rt) -> SessionCreated:
    """Record a session and enqueue its `session_init` job, in one transaction."""
    try:
        session, job = await rt.sessions.create(workspace_id)
    except (NotFound, PayloadError) as exc:
        raise refused(exc) from None
    return SessionCreated(session=SessionOut.of(session), job=JobOut.of(job))


@router.get("/sessions/{session_id}", response_model=SessionOut, responses=documented(404))
async def get_session(session_id: EntityId, rt: Rt) -> SessionOut:
    session = await rt.workspace_store.get_session(session_id)
    if session is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"session {session_id!r} does not exist")
    return SessionOut.of(session)
