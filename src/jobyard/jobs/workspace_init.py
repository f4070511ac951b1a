"""The seed's `WorkspaceInitExecutor`: decode the payload, call the workspace service."""

from __future__ import annotations

from typing import Protocol

from jobyard.dispatcher.executor import JobContext
from jobyard.jobs.types import WorkspaceInitPayload
from jobyard.model import Job

__all__ = ["WorkspaceInitExecutor", "WorkspaceInitializer"]


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
