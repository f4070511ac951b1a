"""A real uvicorn server on a free loopback port, in a background thread, for HTTP tests.

The server owns its event loop and its runtime (store, dispatcher), and is the one `jobyard
serve` runs (`jobyard.api.server.build_server`, with its connection guards, on the engine's app
with the workspace platform's extension), on a socket bound before it starts; tests talk to it
over HTTP and inspect the database through their own connection.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from jobyard import Config
from jobyard.api import Extension, ServerSettings, create_app
from jobyard.api.server import bind, build_server
from jobyard.workspaces import WorkspaceRuntime as Runtime
from jobyard.workspaces import build_workspace_runtime as build_runtime
from jobyard.workspaces.web import workspace_extension

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
    extensions: Sequence[Extension]

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
    server: dict[str, object] | None = None,
    **config: object,
) -> Iterator[LiveServer]:
    """`server` overrides ServerSettings fields (timeouts, caps); `config` overrides Config's."""
    cfg = Config(**{**FAST, **config}, database_url=database_url, data_dir=data_dir)  # type: ignore[arg-type]
    runtime = build_runtime(cfg)
    sockets = bind("127.0.0.1", 0)
    port = sockets[0].getsockname()[1]
    settings = ServerSettings(host="127.0.0.1", port=port, api_token=token, **(server or {}))  # type: ignore[arg-type]
    extensions = [workspace_extension(runtime)]
    app = create_app(runtime, settings, run_worker=run_worker, extensions=extensions)
    # With uvicorn's access log on, unlike `jobyard serve`: tests that check what is logged
    # see the most a deployment could log.
    uv = build_server(app, settings, graceful_shutdown=10, log_level="warning", access_log=True)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", runtime, cfg, token, extensions)
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        for sock in sockets:
            sock.close()
