"""Fixtures of the chaos suite: a private PostgreSQL cluster and a results directory.

With CI=true nothing here skips: a missing PostgreSQL 15 installation fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import results_dir
from tests.chaos.pgcluster import PrivatePostgres, clean_stale_clusters, postgres_problem
from tests.chaos.profiles import Profile, current

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def chaos_profile() -> Profile:
    return current()


@pytest.fixture(scope="session")
def chaos_results(chaos_profile: Profile) -> Path:
    return results_dir(chaos_profile)


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL 15 cluster of our own, on a free port, deleted at the end of the session.
    The machine's shared server is never touched."""
    problem = postgres_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"the chaos suite needs PostgreSQL 15 binaries in CI: {problem}")
        pytest.skip(f"no private PostgreSQL cluster possible: {problem}")
    clean_stale_clusters()
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()
