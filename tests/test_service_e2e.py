"""The whole path as people run it: an API process and two worker processes, on each store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import FAST, free_port

SCRIPT = Path(__file__).parent / "cluster" / "service.py"


@pytest.fixture
def deployment(store_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    (data / "templates" / "starter").mkdir(parents=True)
    (data / "templates" / "starter" / "notes.md").write_text("# notes\n")
    config = {**FAST, "database_url": store_url, "data_dir": str(data)}
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    logs = open(tmp_path / "procs.log", "wb")  # noqa: SIM115 - closed below
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), role, json.dumps({"config": config, "port": port})],
            env=env,
            stdout=logs,
            stderr=logs,
        )
        for role in ("serve", "worker", "worker")
    ]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "procs.log").read_text()[-3000:]
        time.sleep(0.05)
    try:
        yield url, data
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=30) for proc in procs]
        logs.close()
        log = (tmp_path / "procs.log").read_text()
        # Workers exit 0; uvicorn shuts the app down, then re-raises SIGTERM on itself.
        assert codes[1:] == [0, 0], log[-3000:]
        assert codes[0] in (0, -signal.SIGTERM), log[-3000:]
        assert "Application shutdown complete" in log


def settle(http: httpx.Client, path: str) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while (body := http.get(path).json())["status"] not in ("ready", "failed"):
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    return dict(body)


def test_workspace_and_session_over_http_with_two_worker_processes(
    deployment: tuple[str, Path],
) -> None:
    url, data = deployment
    with httpx.Client(base_url=url, timeout=10) as http:
        nodes = http.get("/api/status").json()["nodes"]
        deadline = time.monotonic() + 10
        while len(nodes) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
            nodes = http.get("/api/status").json()["nodes"]
        workers = {n["node_id"] for n in nodes}
        created = http.post("/api/workspaces", json={"name": "team", "template": "starter"})
        assert created.status_code == 202
        ws = created.json()["workspace"]
        session = http.post(f"/api/workspaces/{ws['id']}/sessions").json()["session"]
        assert settle(http, f"/api/workspaces/{ws['id']}")["status"] == "ready"
        assert settle(http, f"/api/sessions/{session['id']}")["status"] == "ready"
        job = http.get(f"/api/jobs/{ws['job_id']}").json()
        assert job["status"] == "completed"
        assert job["owner"] in workers
    root = data / "workspaces" / ws["id"]
    assert (root / "notes.md").read_text() == "# notes\n"
    assert (root / ".jobyard" / "sessions" / session["id"] / "state.json").is_file()
