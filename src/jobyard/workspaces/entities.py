"""Workspaces and sessions: what the platform's two job types initialize.

They live in the same database as the jobs, so creating one and enqueuing its init job commit
together or not at all.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

__all__ = [
    "NAME_PATTERN",
    "EntityStatus",
    "NewSession",
    "NewWorkspace",
    "Session",
    "Workspace",
]

# A workspace name is also safe as a directory name on every platform we run on.
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class EntityStatus(enum.StrEnum):
    """`pending → initializing → ready`, or `failed` with the error."""

    PENDING = "pending"
    INITIALIZING = "initializing"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class NewWorkspace:
    id: str
    name: str
    template: str | None


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    template: str | None
    status: EntityStatus
    error: str | None
    job_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewSession:
    id: str
    workspace_id: str


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    workspace_id: str
    status: EntityStatus
    error: str | None
    job_id: int | None
    created_at: datetime
    updated_at: datetime
