"""An enqueuing process for the SQLite kill test: `python -m tests.chaos.producer URL ACKS`.

Enqueues small batches of `bulk` jobs for ever. After each enqueue returns (acknowledged), it
appends the new ids to ACKS, one per line, and fsyncs the file, so after any SIGKILL every id
in the file was acknowledged to the caller.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

from jobyard import Queue, open_store


async def produce(url: str, acks: str) -> None:
    store = open_store(url)
    queue = Queue(store)
    queue.declare("bulk")
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while True:
            jobs = await queue.enqueue_many("bulk", [{"ms": 1}] * random.randint(1, 20))
            os.write(fd, "".join(f"{job.id}\n" for job in jobs).encode())
            os.fsync(fd)
            await asyncio.sleep(random.uniform(0, 0.01))
    finally:
        os.close(fd)
        await store.close()


if __name__ == "__main__":
    asyncio.run(produce(sys.argv[1], sys.argv[2]))
