"""Running the service: uvicorn on the app, with the exposure check first."""

from __future__ import annotations

import logging

import uvicorn

from jobyard.api.app import create_app
from jobyard.api.settings import ServerSettings
from jobyard.config import Config
from jobyard.workspaces.runtime import build_workspace_runtime

__all__ = ["serve"]

log = logging.getLogger("jobyard.server")


def serve(config: Config, settings: ServerSettings, *, run_worker: bool = True) -> None:
    """Serve the API and dashboard (and, with `run_worker`, a worker node) until SIGINT or
    SIGTERM; uvicorn then stops the app, which drains the node."""
    settings.check_exposure()
    runtime = build_workspace_runtime(config)
    app = create_app(runtime, settings, run_worker=run_worker)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=int(config.shutdown_grace_period.total_seconds()) + 5,
    )
