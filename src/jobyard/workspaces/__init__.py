"""The workspace platform: workspaces (folders built from templates) and sessions inside them,
initialized by two job types on the jobyard engine.

It is one application of the engine, shipped with it: `jobyard serve`, `jobyard worker` and
`make run` run it. The engine never imports it. Its tables are its own migration line, created
only where the platform runs.
"""

from __future__ import annotations

from typing import Any

from jobyard.model import Job
from jobyard.queue import Queue
from jobyard.workspaces.entities import EntityStatus, Session, Workspace
from jobyard.workspaces.executors import SessionInitExecutor, WorkspaceInitExecutor
from jobyard.workspaces.payloads import (
    JOB_TYPE_SESSION_INIT,
    JOB_TYPE_WORKSPACE_INIT,
    SessionInitPayload,
    WorkspaceInitPayload,
)
from jobyard.workspaces.runtime import (
    WORKSPACE_LIMITS,
    WorkspaceRuntime,
    build_workspace_runtime,
)
from jobyard.workspaces.session import SessionService
from jobyard.workspaces.store import WorkspaceStore, open_workspace_store
from jobyard.workspaces.workspace import WorkspaceService

__all__ = [
    "JOB_TYPE_SESSION_INIT",
    "JOB_TYPE_WORKSPACE_INIT",
    "WORKSPACE_LIMITS",
    "EntityStatus",
    "Session",
    "SessionInitExecutor",
    "SessionInitPayload",
    "SessionService",
    "Workspace",
    "WorkspaceInitExecutor",
    "WorkspaceInitPayload",
    "WorkspaceRuntime",
    "WorkspaceService",
    "WorkspaceStore",
    "build_workspace_runtime",
    "enqueue_session_init",
    "enqueue_session_init_sync",
    "enqueue_workspace_init",
    "enqueue_workspace_init_sync",
    "open_workspace_store",
]


async def enqueue_workspace_init(queue: Queue, workspace_id: str, *, conn: Any = None) -> Job:
    """Enqueue a `workspace_init` job: payload `{"workspaceId": workspace_id}`. The queue must
    have the type declared (as `build_workspace_runtime` does)."""
    return await queue.enqueue(JOB_TYPE_WORKSPACE_INIT, {"workspaceId": workspace_id}, conn=conn)


async def enqueue_session_init(queue: Queue, session_id: str, *, conn: Any = None) -> Job:
    """Enqueue a `session_init` job: payload `{"sessionId": session_id}`."""
    return await queue.enqueue(JOB_TYPE_SESSION_INIT, {"sessionId": session_id}, conn=conn)


def enqueue_workspace_init_sync(queue: Queue, workspace_id: str, *, conn: Any = None) -> Job:
    """`enqueue_workspace_init` for code without an event loop."""
    return queue.enqueue_sync(JOB_TYPE_WORKSPACE_INIT, {"workspaceId": workspace_id}, conn=conn)


def enqueue_session_init_sync(queue: Queue, session_id: str, *, conn: Any = None) -> Job:
    """`enqueue_session_init` for code without an event loop."""
    return queue.enqueue_sync(JOB_TYPE_SESSION_INIT, {"sessionId": session_id}, conn=conn)
