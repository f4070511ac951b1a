"""Shared tools of the hostile-input suite: looking at the database behind the service's back,
running a store from synchronous (hypothesis) code, and waiting without blind sleeps."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx
import psycopg

from jobyard import open_store
from jobyard.store.ports import Store
from tests.live_server import LiveServer

T = TypeVar("T")

PG_SERVER: Final = os.environ.get("JOBYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
ENTITY_TABLES: Final = ("jobyard_jobs", "jobyard_workspaces", "jobyard_sessions")
ALL_TABLES: Final = (
    *ENTITY_TABLES,
    "jobyard_nodes",
    "jobyard_leader",
    "jobyard_migrations",
)


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def count_rows(url: str, table: str) -> int:
    """Rows in `table`, read straight from the database (never through the service)."""
    assert table in ALL_TABLES, table  # a fixed list: the name goes into the SQL text
    if backend_of(url) == "sqlite":
        conn = sqlite3.connect(_sqlite_path(url))
        try:
            (n,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        finally:
            conn.close()
        return int(n)
    with psycopg.connect(url) as pconn:
        row = pconn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def entity_counts(url: str) -> dict[str, int]:
    """Rows in the jobs, workspaces and sessions tables."""
    return snapshot(url)[0]


def existing_tables(url: str) -> set[str]:
    """The jobyard tables that exist, from the catalog."""
    return snapshot(url)[1]


_COUNTS: Final = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in ENTITY_TABLES)


def snapshot(url: str) -> tuple[dict[str, int], set[str]]:
    """Row counts of the entity tables and the jobyard tables that exist, read straight from
    the database on one connection."""
    if backend_of(url) == "sqlite":
        conn = sqlite3.connect(_sqlite_path(url))
        try:
            names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            counts = conn.execute(_COUNTS).fetchone()
        finally:
            conn.close()
    else:
        with psycopg.connect(url) as pconn:
            names = pconn.execute("SELECT tablename FROM pg_tables").fetchall()
            counts = pconn.execute(_COUNTS).fetchone()
    assert counts is not None
    tables = {str(n) for (n,) in names if str(n).startswith("jobyard_")}
    return dict(zip(ENTITY_TABLES, (int(c) for c in counts), strict=True)), tables


def wipe_jobs_and_nodes(url: str) -> None:
    """Empty the tables a state-machine example writes, so every example starts clean."""
    if backend_of(url) == "sqlite":
        conn = sqlite3.connect(_sqlite_path(url), isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM jobyard_jobs")
            conn.execute("DELETE FROM jobyard_nodes")
            conn.execute("DELETE FROM jobyard_leader")
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    # DELETE, not TRUNCATE: on tables this small it is many times faster.
    with psycopg.connect(url) as pconn, pconn.transaction():
        for table in ("jobyard_jobs", "jobyard_nodes"):
            pconn.execute(f"DELETE FROM {table}")
        pconn.execute("DELETE FROM jobyard_leader")


def create_pg_database(template: str, name: str) -> str:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return f"{PG_SERVER}/{name}"


def drop_pg_database(name: str) -> None:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class StoreRunner:
    """A store on its own event loop, for synchronous test code (hypothesis examples, state
    machines): `run(coro)` drives one call to completion on that loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.backend = backend_of(url)
        self._runner = asyncio.Runner()
        self.store: Store = open_store(url)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def __enter__(self) -> StoreRunner:
        self.run(self.store.migrate())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.run(self.store.close())
        finally:
            self._runner.close()


def eventually(check: Callable[[], T | None], what: str, within: float = 15.0) -> T:
    """Poll `check` until it returns something truthy (the service works on its own clock)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


async def async_eventually(
    check: Callable[[], Awaitable[bool]], what: str, within: float = 15.0
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def settled(client: httpx.Client, path: str) -> dict[str, Any] | None:
    """The workspace or session at `path` once it is ready or failed; None before."""
    body: dict[str, Any] = client.get(path).json()
    return body if body["status"] in ("ready", "failed") else None


def refused_with_detail(response: httpx.Response, *codes: int) -> str:
    """Assert a 4xx refusal in `codes` with a non-empty JSON `detail`; returns the detail."""
    assert response.status_code in codes, (response.status_code, response.text[:300])
    detail = response.json()["detail"]
    assert detail, response.text
    return str(detail)


class _ServerErrors(logging.Handler):
    """Counts the errors uvicorn logs, so a test can wait until the server has finished
    logging a 500 (the client gets the response first).

    Why wait: on Python 3.11, formatting a traceback runs `ast.parse`, whose recursion counter
    is shared by all threads; pytest formatting a failure while the server thread formats its
    traceback can crash pytest itself ("AST constructor recursion depth mismatch")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen = 0
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.seen += 1
            self._changed.notify_all()

    def wait_past(self, count: int, within: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.seen > count, within)


SERVER_ERRORS: Final = _ServerErrors()


def send(server: LiveServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on its own connection (a 500 may leave a connection unusable); after a
    500, returns only once the server has logged it."""
    # Last in uvicorn's handlers, so it runs after uvicorn's own handler has formatted the
    # record; added again when a newer server's logging setup replaced the handlers.
    logger = logging.getLogger("uvicorn")
    if SERVER_ERRORS not in logger.handlers:
        logger.addHandler(SERVER_ERRORS)
    before = SERVER_ERRORS.seen
    with server.client() as http:
        response = http.request(method, path, **kwargs)
    if response.status_code >= 500:
        assert SERVER_ERRORS.wait_past(before, 10), "the server answered 500 but logged nothing"
    return response
