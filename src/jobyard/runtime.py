"""Wiring: one store, queue, dispatcher and the two services, built from a Config.

The HTTP server, the CLI and `make run` all assemble a node the same way through
`build_runtime`, so what runs in production is what the tests run.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobyard.admin import JobAdmin
from jobyard.config import Config
from jobyard.dispatcher.dispatcher import Dispatcher
from jobyard.dispatcher.limits import Limits
from jobyard.queue import Queue
from jobyard.store import open_store
from jobyard.store.base import Store
from jobyard.workspaces.executors import SessionInitExecutor, WorkspaceInitExecutor
from jobyard.workspaces.payloads import JOB_TYPE_SESSION_INIT, JOB_TYPE_WORKSPACE_INIT
from jobyard.workspaces.session import SessionService
from jobyard.workspaces.workspace import WorkspaceService

__all__ = ["Runtime", "build_runtime"]


@dataclass
class Runtime:
    config: Config
    store: Store
    queue: Queue
    limits: Limits
    dispatcher: Dispatcher
    workspaces: WorkspaceService
    sessions: SessionService
    admin: JobAdmin

    async def close(self) -> None:
        await self.store.close()


def build_runtime(config: Config, *, limits: Limits | None = None) -> Runtime:
    """A node serving the seed's job types, on the store that `config.database_url` names."""
    limits = limits if limits is not None else Limits()
    store = open_store(config.database_url)
    queue = Queue(store, config=config)
    dispatcher = Dispatcher(config, store, queue, limits)
    workspaces = WorkspaceService(store, queue, config.data_dir, config.templates_path)
    # Every node is assembled here before it starts (so are CLI commands): the moment to clear
    # what builds killed on this host left behind. Safe at any time, as no live build's folder
    # is ever touched.
    workspaces.sweep_staging()
    sessions = SessionService(store, queue, config.data_dir)
    dispatcher.register_executor(JOB_TYPE_WORKSPACE_INIT, WorkspaceInitExecutor(workspaces))
    dispatcher.register_executor(JOB_TYPE_SESSION_INIT, SessionInitExecutor(sessions))
    admin = JobAdmin(store, limits=limits, on_requeue=queue.notify_enqueued)
    return Runtime(config, store, queue, limits, dispatcher, workspaces, sessions, admin)
