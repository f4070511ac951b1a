"""A jobyard node for the multi-process tests: `python tests/cluster/node.py SPEC_JSON`.

SPEC keys: url, evidence (a file this process appends JSON lines to), config (Config fields),
limits ({type: n}), types (executor types to register), work_ms (how long "work" takes).

Executor "work": records start and end, sleeping work_ms between. Executor "hang": like "work",
except that on the attempt named in its payload ("hang_on_attempt") it records the start and
never returns, so a test can kill the node in the middle of a job. Leadership is recorded too:
one line per won election or renewal with the wall-clock interval the node trusts its term,
and one line when it resigns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from jobyard import Config, Dispatcher, Job, JobContext, Limits, Queue, open_store
from jobyard.node import run_node
from jobyard.store.records import LeaderTerm


def main() -> None:
    spec = json.loads(sys.argv[1])
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [{os.getpid()}] %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(run(spec))


async def run(spec: dict[str, Any]) -> None:
    fd = os.open(spec["evidence"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(**fields: Any) -> None:
        # One small O_APPEND write per line: whole even if the process dies right after.
        os.write(fd, (json.dumps(fields) + "\n").encode())

    store = open_store(spec["url"])
    queue = Queue(store)
    config = Config(**spec.get("config", {}))
    dispatcher = Dispatcher(config, store, queue, Limits(spec.get("limits", {})))
    node = dispatcher.node_id
    work_s = spec.get("work_ms", 20) / 1000

    async def work(ctx: JobContext, job: Job) -> None:
        record(ev="start", job=job.id, attempt=job.attempt, node=node, type=job.type, t=time.time())
        await asyncio.sleep(work_s)
        record(ev="end", job=job.id, attempt=job.attempt, node=node, type=job.type, t=time.time())

    async def hang(ctx: JobContext, job: Job) -> None:
        if job.attempt == job.payload.get("hang_on_attempt"):
            record(
                ev="start", job=job.id, attempt=job.attempt, node=node, type=job.type, t=time.time()
            )
            await asyncio.Event().wait()
        await work(ctx, job)

    def on_leadership(term: LeaderTerm | None, trust_until: float) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        if term is None:
            record(ev="resign", node=node, t=now_wall)
        else:
            until = now_wall + (trust_until - now_mono)
            record(
                ev="term",
                node=node,
                elected_at=term.elected_at.isoformat(),
                t=now_wall,
                until=until,
            )

    executors = {"work": work, "hang": hang}
    for job_type in spec.get("types", ["work"]):
        dispatcher.register_executor(job_type, executors[job_type])
    dispatcher.on_leadership(on_leadership)
    record(ev="node", node=node, pid=os.getpid(), t=time.time())
    await run_node(dispatcher)
    record(ev="exit", node=node, t=time.time())
    await store.close()
    os.close(fd)


if __name__ == "__main__":
    main()
