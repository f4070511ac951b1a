"""Fixtures of the hostile-input suite.

The HTTP attacks run against one real server per module and backend (starting uvicorn and a
node costs more than most attacks), so "nothing stored" is checked as an unchanged row count
before and after each attack, straight from the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.hostile.helpers import create_pg_database, drop_pg_database
from tests.live_server import LiveServer, live_server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def module_db_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, migrated database on `backend`, shared by one module's tests."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('hostile-db') / 'jobyard.db'}"
        return
    template = str(request.getfixturevalue("pg_template"))
    name = f"jobyard_h_{uuid.uuid4().hex[:12]}"
    url = create_pg_database(template, name)
    yield url
    drop_pg_database(name)


@pytest.fixture(scope="module")
def server(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server (API, dashboard and a worker node) without a token."""
    data = tmp_path_factory.mktemp("hostile-data")
    with live_server(module_db_url, data / "data") as live:
        live.config.templates_path.mkdir(parents=True, exist_ok=True)
        yield live
