"""Shared fixtures: real SQLite files and real PostgreSQL databases, never a mock store.

PostgreSQL: each test gets a fresh database cloned from a migrated template (fast), on the
server at JOBYARD_TEST_PG (default postgresql://postgres@127.0.0.1:5432). When the server is
unreachable the PostgreSQL tests are skipped, except with CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from jobyard import Queue, open_store
from jobyard.store.ports import Store

# What `make check` leaves out to stay under a minute: real processes, real browsers, servers
# waited out, and property runs. `make test` runs everything.
SLOW: dict[str, str] = {
    "chaos": "kills, freezes and restarts workers and a database",
    "test_cluster.py": "several worker processes, killed and stopped",
    "test_service_e2e.py": "a server and two worker processes",
    "test_dashboard_browser.py": "a real Chromium",
    "test_docs_examples.py": "every example of the docs, servers included",
    "test_api_fuzz.py": "schemathesis against the whole API",
    "test_http_guards.py": "waits out the server's header and body timeouts",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(Path(__file__).parent).parts
        if any(part in SLOW for part in parts):
            item.add_marker(pytest.mark.slow)


PG_SERVER = os.environ.get("JOBYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
# One template per test process, so concurrent runs on one server never trip over each other.
TEMPLATE = f"jobyard_test_template_{os.getpid()}"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5)


def _pg_available() -> str | None:
    try:
        with _admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database with the current schema, built once per test session."""
    problem = _pg_available()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    with _admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")

    async def migrate() -> None:
        store = open_store(f"{PG_SERVER}/{TEMPLATE}", min_size=1, max_size=1)
        await store.migrate()
        await store.close()

    asyncio.run(migrate())
    yield TEMPLATE
    with _admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL database for one test."""
    name = f"jobyard_t_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    yield f"{PG_SERVER}/{name}"
    with _admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def empty_pg_url(pg_template: str) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database for one test: nothing migrated yet."""
    name = f"jobyard_e_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{PG_SERVER}/{name}"
    with _admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobyard.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database on each backend in turn."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A fresh store on each backend in turn: the conformance suite's subject."""
    opened = open_store(store_url)
    await opened.migrate()
    yield opened
    await opened.close()


@pytest.fixture
def queue(store: Store) -> Queue:
    return Queue(store)
