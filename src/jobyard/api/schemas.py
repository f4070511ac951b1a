"""The API's JSON shapes. Requests forbid unknown fields; responses mirror the records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from jobyard.model import JobStatus
from jobyard.status import ClusterStatus

__all__ = ["JobCreate", "JobOut", "JobPage", "Record", "RequestBody", "StatusOut"]


class RequestBody(BaseModel):
    """A request body: a field the API does not know is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class JobCreate(RequestBody):
    type: str = Field(min_length=1, max_length=128, examples=["workspace_init"])
    payload: Any = None
    run_at: datetime | None = None
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)
    max_attempts: int | None = Field(default=None, ge=1, le=1000)


class Record(BaseModel):
    """A response built from a record's attributes: no field-by-field copy to keep in step."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, record: object) -> Self:
        return cls.model_validate(record)


class JobOut(Record):
    id: int
    type: str
    payload: Any
    status: JobStatus
    priority: int
    attempt: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    owner: str | None


class JobPage(BaseModel):
    jobs: list[JobOut]
    next: str | None = Field(description="Pass as `after` for the next page; null at the end.")


class LeaderOut(BaseModel):
    node_id: str
    elected_at: datetime
    expires_at: datetime


class NodeOut(BaseModel):
    node_id: str
    hostname: str
    pid: int
    job_types: list[str]
    concurrency: int
    heartbeat_at: datetime | None
    expires_at: datetime | None


class TypeOut(BaseModel):
    type: str
    counts: dict[str, int]
    running: int
    limit: int | None
    served: bool


class StatusOut(BaseModel):
    leader: LeaderOut | None
    nodes: list[NodeOut]
    types: list[TypeOut]
    unserved: list[str]

    @classmethod
    def of(cls, st: ClusterStatus) -> StatusOut:
        leader = None
        if st.leader is not None:
            leader = LeaderOut(
                node_id=st.leader.leader_id,
                elected_at=st.leader.elected_at,
                expires_at=st.leader.expires_at,
            )
        return cls(
            leader=leader,
            nodes=[
                NodeOut(
                    node_id=n.node_id,
                    hostname=n.hostname,
                    pid=n.pid,
                    job_types=list(n.job_types),
                    concurrency=n.concurrency,
                    heartbeat_at=n.heartbeat_at,
                    expires_at=n.expires_at,
                )
                for n in st.nodes
            ],
            types=[
                TypeOut(
                    type=t.type,
                    counts={k.value: v for k, v in t.counts.items()},
                    running=t.running,
                    limit=t.limit,
                    served=t.served,
                )
                for t in st.types
            ],
            unserved=st.unserved,
        )
