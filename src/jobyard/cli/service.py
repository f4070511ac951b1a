"""What the `jobyard` service runs: the engine with the workspace platform on it.

`jobyard serve`, `jobyard worker`, `make run` and the commands that enqueue or wait all run this
one composition, so a job enqueued from the command line meets the same declared payloads,
executors and limits as one enqueued through the API. Of the CLI's own modules, only this one
and `commands.py` (which adds the platform's command groups) know the platform; the rest see
an engine `Runtime` and `JobAdmin`.
"""

from __future__ import annotations

from jobyard.config import Config
from jobyard.dispatcher.limits import Limits
from jobyard.store.ports import Store
from jobyard.workspaces.runtime import WORKSPACE_LIMITS, WorkspaceRuntime, build_workspace_runtime
from jobyard.workspaces.store import open_workspace_store

__all__ = ["ServiceRuntime", "build_runtime", "limits", "migrate"]

ServiceRuntime = WorkspaceRuntime
"""A node of the service: the engine's parts plus the platform's store and services."""


def build_runtime(config: Config) -> ServiceRuntime:
    """A node serving the engine and the platform's two job types, not started."""
    return build_workspace_runtime(config)


def limits() -> Limits:
    """The cluster-wide limits the service's nodes enforce, for `status` to show."""
    return Limits(WORKSPACE_LIMITS)


async def migrate(store: Store) -> tuple[int, int]:
    """The engine's tables, then the platform's (each its own migration line); their versions."""
    return await store.migrate(), await open_workspace_store(store).migrate()
