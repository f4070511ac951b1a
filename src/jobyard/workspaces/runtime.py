"""The workspace platform on the engine: what `jobyard serve`, `jobyard worker` and `make run`
run. One engine runtime, plus the platform's store, its two services and their executors, its
payload models declared on the queue and its per-type limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from jobyard.config import Config
from jobyard.dispatcher.limits import Limits
from jobyard.runtime import Runtime, build_runtime
from jobyard.workspaces.executors import SessionInitExecutor, WorkspaceInitExecutor
from jobyard.workspaces.payloads import (
    JOB_TYPE_SESSION_INIT,
    JOB_TYPE_WORKSPACE_INIT,
    SessionInitPayload,
    WorkspaceInitPayload,
)
from jobyard.workspaces.session import SessionService
from jobyard.workspaces.store import WorkspaceStore, open_workspace_store
from jobyard.workspaces.workspace import WorkspaceService

__all__ = ["WORKSPACE_LIMITS", "WorkspaceRuntime", "build_workspace_runtime"]

# At most this many of each platform job run at once, cluster-wide.
WORKSPACE_LIMITS: Final[Mapping[str, int]] = {JOB_TYPE_WORKSPACE_INIT: 5, JOB_TYPE_SESSION_INIT: 10}


@dataclass
class WorkspaceRuntime(Runtime):
    """A node that builds workspaces and sessions, besides whatever else it serves."""

    workspace_store: WorkspaceStore
    workspaces: WorkspaceService
    sessions: SessionService

    async def migrate(self) -> None:
        """The engine's tables, then the platform's own."""
        await super().migrate()
        await self.workspace_store.migrate()


def build_workspace_runtime(config: Config, *, limits: Limits | None = None) -> WorkspaceRuntime:
    """A node serving the platform's two job types. `limits` adds to (or overrides) the
    platform's own: `workspace_init` 5, `session_init` 10."""
    merged = Limits(
        {**WORKSPACE_LIMITS, **(limits.limits if limits is not None else {})},
        default=limits.default if limits is not None else None,
    )
    base = build_runtime(config, limits=merged)
    base.queue.declare(JOB_TYPE_WORKSPACE_INIT, WorkspaceInitPayload)
    base.queue.declare(JOB_TYPE_SESSION_INIT, SessionInitPayload)
    store = open_workspace_store(base.store)
    workspaces = WorkspaceService(store, base.queue, config.data_dir, config.templates_path)
    # Every node is assembled here before it starts (so are CLI commands): the moment to clear
    # what builds killed on this host left behind. Safe at any time, as no live build's folder
    # is ever touched.
    workspaces.sweep_staging()
    sessions = SessionService(store, base.queue, config.data_dir, base.store)
    base.dispatcher.register_executor(JOB_TYPE_WORKSPACE_INIT, WorkspaceInitExecutor(workspaces))
    base.dispatcher.register_executor(JOB_TYPE_SESSION_INIT, SessionInitExecutor(sessions))
    return WorkspaceRuntime(
        base.config,
        base.store,
        base.queue,
        base.limits,
        base.dispatcher,
        base.admin,
        store,
        workspaces,
        sessions,
    )
