"""The executors of the platform's two job types: decode the payload, call the service.

Each service's `initialize` is idempotent, so at-least-once delivery may call it again for the
same workspace or session.
"""

from __future__ import annotations

from typing import Protocol

from jobyard.dispatcher.executor import JobContext
from jobyard.model import Job
from jobyard.workspaces.payloads import SessionInitPayload, WorkspaceInitPayload

__all__ = [
    "SessionInitExecutor",
    "SessionInitializer",
    "WorkspaceInitExecutor",
    "WorkspaceInitializer",
]


class WorkspaceInitializer(Protocol):
    """What the executor needs from a workspace service. `initialize` must be idempotent:
    at-least-once delivery may call it again for the same workspace."""

    async def initialize(self, workspace_id: str) -> None: ...


class WorkspaceInitExecutor:
    def __init__(self, workspace_service: WorkspaceInitializer) -> None:
        self.workspace_service = workspace_service

    async def execute(self, ctx: JobContext, job: Job) -> None:
        payload = WorkspaceInitPayload.model_validate(job.payload)
        await self.workspace_service.initialize(payload.workspace_id)


class SessionInitializer(Protocol):
    """What the executor needs from a session service. `initialize` must be idempotent."""

    async def initialize(self, session_id: str) -> None: ...


class SessionInitExecutor:
    def __init__(self, session_service: SessionInitializer) -> None:
        self.session_service = session_service

    async def execute(self, ctx: JobContext, job: Job) -> None:
        payload = SessionInitPayload.model_validate(job.payload)
        await self.session_service.initialize(payload.session_id)
