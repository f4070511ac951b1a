"""The platform's two job types and their payloads.

The payload models serialize with camelCase keys, as the platform's other clients expect:
`{"workspaceId": ...}` and
`{"sessionId": ...}`. Python code uses snake_case attribute names.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "JOB_TYPE_SESSION_INIT",
    "JOB_TYPE_WORKSPACE_INIT",
    "SessionInitPayload",
    "WorkspaceInitPayload",
]

JOB_TYPE_WORKSPACE_INIT = "workspace_init"
JOB_TYPE_SESSION_INIT = "session_init"


class WorkspaceInitPayload(BaseModel):
    """Payload of a `workspace_init` job: `{"workspaceId": "..."}`."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    workspace_id: str = Field(alias="workspaceId", min_length=1, max_length=200)


class SessionInitPayload(BaseModel):
    """Payload of a `session_init` job: `{"sessionId": "..."}`."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    session_id: str = Field(alias="sessionId", min_length=1, max_length=200)
