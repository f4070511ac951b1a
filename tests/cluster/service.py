"""The service as separate processes: `python tests/cluster/service.py serve|worker SPEC_JSON`.

SPEC: {"config": {...Config fields...}, "port": N (serve only)}. `serve` runs the API without a
worker; `worker` runs a node that serves the seed's job types. Both stop cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from jobyard import Config
from jobyard.api.server import serve
from jobyard.api.settings import ServerSettings
from jobyard.node import run_node
from jobyard.workspaces import build_workspace_runtime as build_runtime


async def work(config: Config) -> None:
    runtime = build_runtime(config)
    await runtime.store.migrate()
    await run_node(runtime.dispatcher)
    await runtime.close()


def main() -> None:
    role, spec = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    config = Config(**spec["config"])
    if role == "serve":
        serve(config, ServerSettings(host="127.0.0.1", port=spec["port"]), run_worker=False)
    else:
        asyncio.run(work(config))


if __name__ == "__main__":
    main()
