"""Failpoints parse strictly and, armed, fire at their point in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobyard.failpoints import _parse
from jobyard.model import ConfigError


def test_specs_parse_and_bad_ones_are_refused() -> None:
    assert _parse("") == {}
    assert _parse("after_claim=kill,before_complete=stop@0.25") == {
        "after_claim": ("kill", 1.0),
        "before_complete": ("stop", 0.25),
    }
    for bad in ("nowhere=kill", "after_claim=explode", "after_claim=kill@often"):
        with pytest.raises(ConfigError, match="JOBYARD_FAILPOINTS"):
            _parse(bad)


def test_an_armed_failpoint_kills_the_process_right_after_the_claim(
    sqlite_url: str, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from jobyard import Config, Dispatcher, Queue, open_store

        async def main():
            store = open_store({sqlite_url!r})
            queue = Queue(store)
            dispatcher = Dispatcher(Config(job_poll_interval=0.05), store, queue)
            dispatcher.register_executor("t", lambda job: print("ran", flush=True))
            await queue.enqueue("t", {{}})
            await dispatcher.start()

        asyncio.run(main())
        """
    )
    env = {**os.environ, "JOBYARD_FAILPOINTS": "after_claim=kill"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr
    assert "ran" not in proc.stdout  # died between the claim and the run
    import sqlite3

    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    assert conn.execute("SELECT status, attempt FROM jobyard_jobs").fetchall() == [
        ("processing", 1)
    ]
    conn.close()
