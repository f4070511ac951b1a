"""Workspaces and sessions on SQLite, in the engine store's file, on its connection and thread:
one writer, so a workspace and its init job commit in one `BEGIN IMMEDIATE` transaction."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from jobyard.model import Job, NotFound
from jobyard.store.errors import translate_errors
from jobyard.store.records import NewJob
from jobyard.store.sql import load_queries
from jobyard.store.sqlite.store import SQLiteStore, translate_driver_error
from jobyard.workspaces.store import WORKSPACES_LINE
from jobyard.workspaces.store.base import Row, WorkspaceStoreBase

__all__ = ["SQLiteWorkspaceStore"]

_Q: Final = load_queries("jobyard.workspaces.store.sqlite", "queries.sql")
_MIGRATIONS: Final = "jobyard.workspaces.store.sqlite.migrations"


@translate_errors((sqlite3.Error,), translate_driver_error)
class SQLiteWorkspaceStore(WorkspaceStoreBase):
    def __init__(self, engine: SQLiteStore) -> None:
        self.engine = engine

    async def migrate(self) -> int:
        return await self.engine.migrate_line(WORKSPACES_LINE, _MIGRATIONS)

    async def _rows(
        self, name: str, params: Mapping[str, Any], *, write: bool = False, listing: bool = False
    ) -> list[Row]:
        query = _Q[name]
        if write:
            return await self.engine.write(lambda c: c.execute(query, params).fetchall())
        return await self.engine.read(
            lambda c: c.execute(query, params).fetchall(), listing=listing
        )

    async def _create(self, name: str, params: Mapping[str, Any], job: NewJob) -> tuple[Row, Job]:
        query = _Q[name]

        def create(conn: sqlite3.Connection) -> tuple[Row, Job]:
            (created,) = self.engine.enqueue_jobs_sync([job], conn=conn)
            row = conn.execute(query, {**params, "job_id": created.id}).fetchone()
            if row is None:
                raise NotFound(f"no row for {name}")  # rolls the job back too
            return row, created

        return await self.engine.write(create)

    def _now(self) -> float:
        return time.time()

    def _list(self, values: Sequence[str]) -> str:
        return json.dumps(list(values))

    def _moment(self, value: float) -> datetime:
        return datetime.fromtimestamp(value, UTC)
