"""Driver errors never cross the store seam: they arrive as StoreError, or StoreUnavailable
when a retry may help, with the driver's error kept as the cause."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from jobyard import StoreError, StoreUnavailable, open_store
from jobyard.store.records import NewJob
from jobyard.store.sqlite.store import SQLiteStore


async def test_a_locked_sqlite_file_is_unavailable_not_a_driver_error(tmp_path: Path) -> None:
    path = tmp_path / "jobyard.db"
    store = SQLiteStore(path, busy_timeout=0.05)
    await store.migrate()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="locked") as caught:
            await store.enqueue_job(NewJob(type="t", payload_json="null"))
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await store.close()


async def test_a_sqlite_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-db.db"
    path.write_bytes(b"this is not a database file " * 200)
    store = open_store(f"sqlite:///{path}")
    try:
        with pytest.raises(StoreError) as caught:
            await store.get_job(1)
        assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    finally:
        await store.close()


async def test_an_unreachable_postgresql_is_unavailable(pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/jobyard_no_such_database"
    store = open_store(missing, auto_migrate=False, open_timeout=1.0)
    try:
        with pytest.raises(StoreUnavailable):
            await store.get_job(1)
    finally:
        await store.close()


async def test_a_postgresql_refusal_is_a_store_error_with_its_cause(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        await store.migrate()
        # A payload that is not JSON cannot be stored in a jsonb column.
        with pytest.raises(StoreError) as caught:
            await store.enqueue_job(NewJob(type="t", payload_json="{not json"))
        assert not isinstance(caught.value, StoreUnavailable)
        assert isinstance(caught.value.__cause__, psycopg.Error)
    finally:
        await store.close()
