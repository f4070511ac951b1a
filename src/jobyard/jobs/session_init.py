"""The seed's `SessionInitExecutor`: decode the payload, call the session service."""

from __future__ import annotations

from typing import Protocol

from jobyard.dispatcher.executor import JobContext
from jobyard.jobs.types import SessionInitPayload
from jobyard.model import Job

__all__ = ["SessionInitExecutor", "SessionInitializer"]


class SessionInitializer(Protocol):
    """What the executor needs from a session service. `initialize` must be idempotent."""

    async def initialize(self, session_id: str) -> None: ...


class SessionInitExecutor:
    def __init__(self, session_service: SessionInitializer) -> None:
        self.session_service = session_service

    async def execute(self, ctx: JobContext, job: Job) -> None:
        payload = SessionInitPayload.model_validate(job.payload)
        await self.session_service.initialize(payload.session_id)
