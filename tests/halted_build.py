"""A workspace build that stops half-way, in a process of its own, for the staging sweep tests.

`python tests/halted_build.py DATABASE_URL DATA_DIR WORKSPACE_ID` builds the workspace until its
template's files are in the staging folder, prints `staged <folder name>` and then waits, with
the build's lock held, until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

from jobyard import Config, Queue, open_store
from jobyard.workspaces.entities import Workspace
from jobyard.workspaces.workspace import WorkspaceService


class HaltedService(WorkspaceService):
    def _fill(self, workspace: Workspace, staging: Path) -> str:
        source = super()._fill(workspace, staging)
        print("staged", staging.name, flush=True)
        threading.Event().wait()  # until killed
        return source


async def main(database_url: str, data_dir: Path, workspace_id: str) -> None:
    config = Config(database_url=database_url, data_dir=data_dir)
    store = open_store(database_url)
    service = HaltedService(store, Queue(store), config.data_dir, config.templates_path)
    await service.initialize(workspace_id)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))
