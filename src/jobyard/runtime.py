"""Wiring: one store, queue, dispatcher and admin door, built from a Config.

Applications built on the engine add their own parts on top (the workspace platform does, in
`jobyard.workspaces.runtime`), so what runs in production is assembled the same way the tests
assemble it.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobyard.admin import JobAdmin
from jobyard.config import Config
from jobyard.dispatcher.dispatcher import Dispatcher
from jobyard.dispatcher.limits import Limits
from jobyard.queue import Queue
from jobyard.store import open_store
from jobyard.store.ports import Store

__all__ = ["Runtime", "build_runtime"]


@dataclass
class Runtime:
    """A node's parts. The dispatcher serves what is registered on it before it starts."""

    config: Config
    store: Store
    queue: Queue
    limits: Limits
    dispatcher: Dispatcher
    admin: JobAdmin

    async def migrate(self) -> None:
        """Create or upgrade the tables this node uses (the engine's)."""
        await self.store.migrate()

    async def close(self) -> None:
        await self.store.close()


def build_runtime(config: Config, *, limits: Limits | None = None) -> Runtime:
    """A node on the store that `config.database_url` names, serving no job type yet."""
    limits = limits if limits is not None else Limits()
    store = open_store(config.database_url)
    queue = Queue(store, config=config)
    dispatcher = Dispatcher(config, store, queue, limits)
    admin = JobAdmin(store, limits=limits, on_requeue=queue.notify_enqueued)
    return Runtime(config, store, queue, limits, dispatcher, admin)
