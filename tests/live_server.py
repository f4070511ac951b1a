"""A real uvicorn server on a free loopback port, in a background thread, for HTTP tests.

The server owns its event loop and its runtime (store, dispatcher), exactly as in production;
tests talk to it over HTTP and inspect the database through their own connection.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from jobyard import Config
from jobyard.api import ServerSettings, create_app
from jobyard.workspaces import WorkspaceRuntime as Runtime
from jobyard.workspaces import build_workspace_runtime as build_runtime

FAST = {
    "job_poll_interval": 0.05,
    "heartbeat_interval": 0.2,
    "leader_lease_duration": 1.0,
    "retry_backoff": 0.01,
    "retry_backoff_max": 0.02,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    runtime: Runtime
    config: Config
    token: str | None

    def client(self, *, token: str | None = "default") -> httpx.Client:
        use = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {use}"} if use else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@contextmanager
def live_server(
    database_url: str,
    data_dir: Path,
    *,
    token: str | None = None,
    run_worker: bool = True,
    **config: object,
) -> Iterator[LiveServer]:
    cfg = Config(**{**FAST, **config}, database_url=database_url, data_dir=data_dir)  # type: ignore[arg-type]
    runtime = build_runtime(cfg)
    port = free_port()
    settings = ServerSettings(host="127.0.0.1", port=port, api_token=token)  # type: ignore[arg-type]
    app = create_app(runtime, settings, run_worker=run_worker)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", runtime, cfg, token)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
