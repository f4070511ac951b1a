"""The engine's JSON API: jobs, status and health. Extensions add theirs beside it, under the
same `/api` prefix and behind the same door (see `jobyard.api.extensions`).

Every refusal happens before anything is written: an unknown type or a bad payload answers 422
with the reason, an oversize body 413, a missing job 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel

from jobyard.admin import JobAction
from jobyard.api.schemas import JobCreate, JobOut, JobPage, StatusOut
from jobyard.api.security import require_token
from jobyard.model import (
    Job,
    JobNotFound,
    JobStatus,
    NotFound,
    PayloadError,
    PayloadTooLarge,
    UnknownJobType,
)
from jobyard.runtime import Runtime
from jobyard.store.records import JobFilter

__all__ = ["MAX_PAGE", "Problem", "api", "api_door", "documented", "health", "refused"]


class Problem(BaseModel):
    detail: str


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error answers for the OpenAPI document: every refusal is `{"detail": "..."}`."""
    reasons = {
        401: "Missing or wrong bearer token (only when a token is configured)",
        404: "No such job",
        409: "The job is not in a state that allows this",
        413: "Request body or payload too large",
        422: "Invalid input: unknown job type, bad payload or parameter",
    }
    return {code: {"model": Problem, "description": reasons[code]} for code in codes}


# The engine's routes, relative to `/api`: `create_app` mounts them, and every extension's,
# behind one door (the token, and the refusals every route may answer).
api = APIRouter()
health = APIRouter()


def api_door() -> APIRouter:
    """A router at `/api` that lets in only callers with the token (when the server has one):
    everything under `/api`, the engine's routes and every extension's, is mounted on it."""
    return APIRouter(
        prefix="/api",
        dependencies=[Depends(require_token)],
        responses=documented(401, 413, 422),
    )


MAX_PAGE = 500


# Job type names: anything else (NUL, quotes, ...) is refused before it reaches the database.
TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.:-]{0,127}$"


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


Rt = Annotated[Runtime, Depends(runtime)]


def refused(exc: Exception) -> HTTPException:
    if isinstance(exc, PayloadTooLarge):
        return HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc))
    if isinstance(exc, NotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


async def job_or_404(rt: Runtime, job_id: int) -> Job:
    job = await rt.admin.get_job(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} does not exist")
    return job


@api.post("/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
async def create_job(body: JobCreate, rt: Rt) -> JobOut:
    """Enqueue a job of a registered type."""
    if body.type not in rt.dispatcher.job_types:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"job type {body.type!r} is not registered; known types: "
            + ", ".join(rt.dispatcher.job_types),
        )
    try:
        job = await rt.queue.enqueue(
            body.type,
            body.payload,
            run_at=body.run_at,
            priority=body.priority,
            max_attempts=body.max_attempts,
        )
    except (PayloadError, UnknownJobType) as exc:
        raise refused(exc) from None
    return JobOut.of(job)


@api.get("/jobs", response_model=JobPage)
async def list_jobs(
    rt: Rt,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    type_: Annotated[str | None, Query(alias="type", pattern=TYPE_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    after: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$")] = None,
) -> JobPage:
    """Newest first. `after` is the `next` cursor of the previous page."""
    before_id = int(after) if after is not None else None
    if before_id is not None and before_id > 2**63 - 1:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "cursor out of range")
    jobs = await rt.admin.list_jobs(
        JobFilter(status=status_, type=type_, limit=limit + 1, before_id=before_id)
    )
    page, more = jobs[:limit], len(jobs) > limit
    return JobPage(jobs=[JobOut.of(j) for j in page], next=str(page[-1].id) if more else None)


@api.get("/jobs/{job_id}", response_model=JobOut, responses=documented(404))
async def get_job(job_id: int, rt: Rt) -> JobOut:
    return JobOut.of(await job_or_404(rt, job_id))


def _acted(action: JobAction) -> JobOut:
    """200 with the job when this call changed it; 409 with the reason when it did not."""
    if not action.changed:
        raise HTTPException(status.HTTP_409_CONFLICT, action.message)
    return JobOut.of(action.job)


@api.post("/jobs/{job_id}/retry", response_model=JobOut, responses=documented(404, 409))
async def retry_job(job_id: int, rt: Rt) -> JobOut:
    """Start a failed or cancelled job again, with a fresh set of attempts. 409 when this call
    did not change the job (it was in another state, already pending included)."""
    try:
        return _acted(await rt.admin.retry_job(job_id))
    except JobNotFound as exc:
        raise refused(exc) from None


@api.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=documented(404, 409))
async def cancel_job(job_id: int, rt: Rt) -> JobOut:
    """Cancel a pending job. 409 when this call did not change the job (it was in another
    state, already cancelled included)."""
    try:
        return _acted(await rt.admin.cancel_job(job_id))
    except JobNotFound as exc:
        raise refused(exc) from None


@api.get("/status", response_model=StatusOut)
async def get_status(rt: Rt) -> StatusOut:
    """The leader and its term, the live nodes, and per type: counts, running and limit."""
    return StatusOut.of(await rt.admin.cluster_status())


@health.get("/healthz")
async def healthz(request: Request, rt: Rt, response: Response) -> dict[str, str]:
    """200 while the database answers and (under `jobyard serve`) the worker node runs."""
    node = getattr(request.app.state, "node", None)
    if node is not None and node.done():
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"status": "unavailable", "reason": "the worker node stopped"}
    try:
        await rt.admin.now()
    except Exception as exc:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"status": "unavailable", "reason": type(exc).__name__}
    return {"status": "ok", "node": rt.dispatcher.node_id}
