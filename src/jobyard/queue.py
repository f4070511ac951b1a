"""Queue: validate, serialize and insert jobs, then wake the dispatcher.

Job types are declared up front (by `declare` or by the dispatcher's `register_executor`);
enqueueing an undeclared type, or a payload its model refuses, raises before anything is
written.

Async code awaits `enqueue`; sync code (a Flask or Django view) calls `enqueue_sync`. Both build the
rows the same way and differ only in how the store runs the insert. Pass `conn=` to join your own
open transaction: the job then exists if and only if that transaction commits.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from jobyard.config import Config
from jobyard.model import ConfigError, Job, PayloadError, PayloadTooLarge, UnknownJobType
from jobyard.store.ports import QueueStore
from jobyard.store.records import NewJob

__all__ = ["JOB_TYPE_PATTERN", "MAX_ATTEMPTS", "JobTypeSpec", "Queue"]

JOB_TYPE_PATTERN: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,127}")
MAX_ATTEMPTS: Final = 1000
_INT32: Final = (-(2**31), 2**31 - 1)
# Far enough for any real schedule, near enough that every store and datetime can hold it.
_MAX_DELAY: Final = timedelta(days=366 * 100)
# json.dumps writes NUL as the escape \u0000; an even run of backslashes before it would be
# literal backslashes in the text, not an escape.
_NUL_ESCAPE: Final = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True, slots=True)
class JobTypeSpec:
    """A declared job type and, optionally, the pydantic model its payload must fit."""

    name: str
    payload_model: type[BaseModel] | None = None


class Queue:
    """Puts jobs into a store. One Queue may serve many dispatchers and threads."""

    def __init__(
        self,
        store: QueueStore,
        *,
        config: Config | None = None,
        max_payload_bytes: int | None = None,
        default_max_attempts: int | None = None,
    ) -> None:
        """`config` supplies `max_payload_bytes` and `max_attempts` (the default for jobs
        enqueued without one); the keyword arguments, when given, win over it."""
        config = config or Config()
        if max_payload_bytes is None:
            max_payload_bytes = config.max_payload_bytes
        if default_max_attempts is None:
            default_max_attempts = config.max_attempts
        if max_payload_bytes < 1:
            raise ConfigError("max_payload_bytes must be at least 1")
        if not 1 <= default_max_attempts <= MAX_ATTEMPTS:
            raise ConfigError(f"default_max_attempts must be from 1 to {MAX_ATTEMPTS}")
        self.store = store
        self.max_payload_bytes = max_payload_bytes
        self.default_max_attempts = default_max_attempts
        self._types: dict[str, JobTypeSpec] = {}
        self._notify: Callable[[], None] | None = None
        self._lock = threading.Lock()

    # -- job types -------------------------------------------------------------------------
    def declare(self, job_type: str, payload_model: type[BaseModel] | None = None) -> JobTypeSpec:
        """Declare `job_type`, optionally with the model its payloads must fit.

        Declaring a type again with no model keeps the model it has; with a different model it
        replaces it.
        """
        if not isinstance(job_type, str) or not JOB_TYPE_PATTERN.fullmatch(job_type):
            raise ConfigError(
                f"job type {job_type!r} is not a valid name: use 1-128 letters, digits and "
                "_ . : -, starting with a letter"
            )
        if payload_model is not None and not (
            isinstance(payload_model, type) and issubclass(payload_model, BaseModel)
        ):
            raise ConfigError(f"payload model for {job_type!r} must be a pydantic BaseModel")
        with self._lock:
            current = self._types.get(job_type)
            if payload_model is None and current is not None:
                return current
            spec = JobTypeSpec(job_type, payload_model)
            self._types[job_type] = spec
            return spec

    @property
    def job_types(self) -> Mapping[str, JobTypeSpec]:
        return dict(self._types)

    def set_notify_func(self, fn: Callable[[], None] | None) -> None:
        """`fn` is called after every enqueue, from the enqueuing
        thread. It must be cheap and thread-safe; the dispatcher's only sets a wake-up flag."""
        self._notify = fn

    # -- building rows ---------------------------------------------------------------------
    def _serialize(self, spec: JobTypeSpec, payload: Any) -> str:
        model = spec.payload_model
        if model is not None and isinstance(payload, BaseModel) and not isinstance(payload, model):
            raise PayloadError(
                f"payload for {spec.name!r} must be a {model.__name__}, "
                f"got {type(payload).__name__}"
            )
        try:
            if model is not None:
                instance = payload if isinstance(payload, model) else model.model_validate(payload)
                payload = instance.model_dump(mode="json", by_alias=True)
            text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            size = len(text.encode("utf-8"))
        except ValidationError as exc:
            raise PayloadError(
                f"payload for {spec.name!r} is invalid: {_first_errors(exc)}"
            ) from None
        except UnicodeEncodeError:
            raise PayloadError(
                f"payload for {spec.name!r} contains text that is not valid Unicode"
            ) from None
        except RecursionError:
            raise PayloadError(f"payload for {spec.name!r} is nested too deeply") from None
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"payload for {spec.name!r} is not JSON: {exc}") from None
        if size > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"payload for {spec.name!r} is {size} bytes; the limit is {self.max_payload_bytes}"
            )
        if _NUL_ESCAPE.search(text):
            # PostgreSQL's jsonb cannot store NUL; refuse it on every store for equal semantics.
            raise PayloadError(f"payload for {spec.name!r} contains a NUL character")
        return text

    def build_jobs(
        self,
        job_type: str,
        payloads: Iterable[Any],
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
    ) -> list[NewJob]:
        """Validate and serialize without writing: the rows `enqueue_many` would insert. For
        operations that insert a job together with other rows (see the services)."""
        spec = self._types.get(job_type) if isinstance(job_type, str) else None
        if spec is None:
            raise UnknownJobType(
                f"job type {job_type!r} is not declared; declare it with queue.declare() or "
                "dispatcher.register_executor() first"
            )
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise PayloadError(f"priority must be an integer, got {priority!r}")
        if not _INT32[0] <= priority <= _INT32[1]:
            raise PayloadError(f"priority must fit in 32 bits, got {priority}")
        attempts = self.default_max_attempts if max_attempts is None else max_attempts
        if (
            isinstance(attempts, bool)
            or not isinstance(attempts, int)
            or not 1 <= attempts <= MAX_ATTEMPTS
        ):
            raise PayloadError(
                f"max_attempts must be an integer from 1 to {MAX_ATTEMPTS}, got {attempts!r}"
            )
        when = _resolve_run_at(run_at)
        return [
            NewJob(
                type=job_type,
                payload_json=self._serialize(spec, payload),
                priority=priority,
                max_attempts=attempts,
                run_at=when,
            )
            for payload in payloads
        ]

    def notify_enqueued(self) -> None:
        """Run the notify hook; for callers that inserted jobs built with `build_jobs`."""
        fn = self._notify
        if fn is not None:
            fn()

    # -- enqueue ---------------------------------------------------------------------------
    async def enqueue(
        self,
        job_type: str,
        payload: Any = None,
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        conn: Any = None,
    ) -> Job:
        """Insert one job. `run_at` is an aware datetime or a delay from now; higher
        `priority` runs first; `max_attempts` defaults to the queue's default (3)."""
        (job,) = await self.enqueue_many(
            job_type,
            [payload],
            run_at=run_at,
            priority=priority,
            max_attempts=max_attempts,
            conn=conn,
        )
        return job

    async def enqueue_many(
        self,
        job_type: str,
        payloads: Iterable[Any],
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        conn: Any = None,
    ) -> list[Job]:
        """Enqueue one job per payload in a single statement and transaction: all or none."""
        rows = self.build_jobs(
            job_type, payloads, run_at=run_at, priority=priority, max_attempts=max_attempts
        )
        jobs = await self.store.enqueue_jobs(rows, conn=conn)
        if jobs:
            self.notify_enqueued()
        return jobs

    def enqueue_sync(
        self,
        job_type: str,
        payload: Any = None,
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        conn: Any = None,
    ) -> Job:
        """`enqueue` for code without an event loop. `conn` may be your sqlite3 or psycopg
        (sync) connection, with a transaction open."""
        (job,) = self.enqueue_many_sync(
            job_type,
            [payload],
            run_at=run_at,
            priority=priority,
            max_attempts=max_attempts,
            conn=conn,
        )
        return job

    def enqueue_many_sync(
        self,
        job_type: str,
        payloads: Iterable[Any],
        *,
        run_at: datetime | timedelta | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        conn: Any = None,
    ) -> list[Job]:
        rows = self.build_jobs(
            job_type, payloads, run_at=run_at, priority=priority, max_attempts=max_attempts
        )
        jobs = self.store.enqueue_jobs_sync(rows, conn=conn)
        if jobs:
            self.notify_enqueued()
        return jobs


def _resolve_run_at(run_at: datetime | timedelta | None) -> datetime | None:
    if run_at is None:
        return None
    if isinstance(run_at, timedelta):
        if not timedelta(0) <= run_at <= _MAX_DELAY:
            raise PayloadError("run_at delay must be between 0 and 100 years")
        return datetime.now(UTC) + run_at
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise PayloadError("run_at must be timezone-aware (for example datetime.now(UTC))")
        if abs(run_at - datetime.now(UTC)) > _MAX_DELAY:
            raise PayloadError("run_at must be within 100 years of now")
        return run_at.astimezone(UTC)  # any offset Python allows, stored as an instant
    raise PayloadError(f"run_at must be a datetime or a timedelta, got {type(run_at).__name__}")


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
