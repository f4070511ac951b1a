"""Fault 10: SIGKILL of processes sharing one SQLite file, in the middle of their writes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from tests.chaos.harness import sqlite_kills, write_json
from tests.chaos.profiles import Profile, current

TIMEOUT = 180 if current().name == "quick" else 600


@pytest.mark.timeout(TIMEOUT)
def test_sqlite_survives_sigkill_mid_write(chaos_profile: Profile, chaos_results: Path) -> None:
    workdir = chaos_results / "sqlite"
    workdir.mkdir()
    result = sqlite_kills(workdir, chaos_profile)
    write_json(workdir / "report.json", asdict(result))
    assert result.kills >= 5, result
    assert result.acknowledged > 0, result
    assert result.integrity_after_kills == "ok", result
    assert result.missing == [], f"acknowledged enqueues lost: {result.missing[:20]}"
    assert result.integrity_after_drain == "ok", result
    assert result.drained, result
    assert result.unfinished == [], result
