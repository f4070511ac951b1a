"""Workspaces and sessions on PostgreSQL, in the engine store's database and pool: a workspace
and its init job are inserted in one transaction on one connection, NOTIFY included."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import psycopg

from jobyard.model import Job, NotFound
from jobyard.store.errors import translate_errors
from jobyard.store.postgres.store import PostgresStore, translate_driver_error
from jobyard.store.records import NewJob
from jobyard.store.sql import load_queries
from jobyard.workspaces.store import WORKSPACES_LINE
from jobyard.workspaces.store.base import Row, WorkspaceStoreBase

__all__ = ["PostgresWorkspaceStore"]

_Q: Final = load_queries("jobyard.workspaces.store.postgres", "queries.sql")
_MIGRATIONS: Final = "jobyard.workspaces.store.postgres.migrations"


@translate_errors((psycopg.Error,), translate_driver_error)
class PostgresWorkspaceStore(WorkspaceStoreBase):
    def __init__(self, engine: PostgresStore) -> None:
        self.engine = engine

    async def migrate(self) -> int:
        return await self.engine.migrate_line(WORKSPACES_LINE, _MIGRATIONS)

    async def _rows(
        self, name: str, params: Mapping[str, Any], *, write: bool = False, listing: bool = False
    ) -> list[Row]:
        async with self.engine.connection() as conn:
            cursor = await conn.execute(_Q[name], params)
            return await cursor.fetchall()

    async def _create(self, name: str, params: Mapping[str, Any], job: NewJob) -> tuple[Row, Job]:
        async with self.engine.connection() as conn, conn.transaction():
            (created,) = await self.engine.enqueue_jobs([job], conn=conn)
            cursor = await conn.execute(_Q[name], {**params, "job_id": created.id})
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"no row for {name}")  # rolls the job back too
            return row, created

    def _now(self) -> None:
        return None  # the statements stamp rows with the server's now()

    def _list(self, values: Sequence[str]) -> list[str]:
        return list(values)

    def _moment(self, value: datetime) -> datetime:
        return value
