"""First use of a brand-new database, from every entry point, creates the schema."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from jobyard import Config, Dispatcher, Job, JobStatus, Queue, open_store
from tests.conftest import PG_SERVER, _admin


@pytest.fixture
def empty_pg_url(pg_template: str) -> Iterator[str]:
    name = f"jobyard_empty_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{PG_SERVER}/{name}"
    with _admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_dispatcher_start_on_an_empty_postgres_database(empty_pg_url: str) -> None:
    store = open_store(empty_pg_url)
    queue = Queue(store)
    dispatcher = Dispatcher(Config(job_poll_interval=0.05), store, queue)
    ran = asyncio.Event()

    async def execute(job: Job) -> None:
        ran.set()

    dispatcher.register_executor("first", execute)
    node = asyncio.create_task(dispatcher.start())
    try:
        await queue.enqueue("first", {})
        await asyncio.wait_for(ran.wait(), timeout=10)
    finally:
        await dispatcher.stop()
        await node
        await store.close()


def test_sync_enqueue_on_an_empty_postgres_database(empty_pg_url: str) -> None:
    store = open_store(empty_pg_url)
    queue = Queue(store)
    queue.declare("first")
    job = queue.enqueue_sync("first", {"n": 1})
    assert job.status is JobStatus.PENDING
    with psycopg.connect(empty_pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobyard_jobs").fetchone() == (1,)


def test_sqlite_enqueue_joins_a_transaction_that_already_wrote(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    setup = open_store(f"sqlite:///{path}")
    Queue(setup).declare("t")
    asyncio.run(setup.migrate())
    setup.close_sync()  # type: ignore[attr-defined]

    conn = sqlite3.connect(path, timeout=2)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO orders DEFAULT VALUES")  # the caller's transaction holds a write
    store = open_store(f"sqlite:///{path}", busy_timeout=2)
    queue = Queue(store)
    queue.declare("t")
    job = queue.enqueue_sync("t", {"order": 1}, conn=conn)  # must not wait for our own lock
    conn.commit()
    conn.close()
    check = sqlite3.connect(path)
    assert check.execute("SELECT id, type FROM jobyard_jobs").fetchall() == [(job.id, "t")]
    check.close()
    store.close_sync()  # type: ignore[attr-defined]
