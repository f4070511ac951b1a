"""`make run`: one node on the embedded SQLite store runs the seed's two job types.

It enqueues a `workspace_init` and a `session_init` job, runs them through executors that
stand in for the workspace and session services, prints the jobs, and exits. The database is
`jobyard.db` in the current directory unless JOBYARD_DATABASE_URL says otherwise.
"""

from __future__ import annotations

import asyncio
import logging

from jobyard import (
    Config,
    Dispatcher,
    Job,
    Queue,
    SessionInitExecutor,
    WorkspaceInitExecutor,
    open_store,
)


class _PrintingService:
    """Stands in for the workspace and session services until they exist."""

    def __init__(self, kind: str, done: asyncio.Queue[str]) -> None:
        self.kind = kind
        self.done = done

    async def initialize(self, entity_id: str) -> None:
        print(f"  {self.kind} {entity_id}: initialized")
        await self.done.put(entity_id)


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = Config.from_env(job_poll_interval=1.0)
    store = open_store(config.database_url)
    queue = Queue(store)
    dispatcher = Dispatcher(config, store, queue)
    done: asyncio.Queue[str] = asyncio.Queue()
    dispatcher.register_executor(
        "workspace_init", WorkspaceInitExecutor(_PrintingService("workspace", done))
    )
    dispatcher.register_executor(
        "session_init", SessionInitExecutor(_PrintingService("session", done))
    )
    print(f"jobyard node {dispatcher.node_id} on {config.database_url}")
    node = asyncio.create_task(dispatcher.start())
    jobs: list[Job] = [
        await queue.enqueue_workspace_init("demo-workspace"),
        await queue.enqueue_session_init("demo-session"),
    ]
    for _ in jobs:
        await asyncio.wait_for(done.get(), timeout=30)
    await dispatcher.stop()
    await node
    for job in jobs:
        stored = await store.get_job(job.id)
        assert stored is not None
        print(f"  job {stored.id} {stored.type} {stored.payload} -> {stored.status.value}")
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
