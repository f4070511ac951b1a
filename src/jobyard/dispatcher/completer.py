"""The completer: records attempt results in batches, fenced.

Results queue up while a write is in flight and go out together in the next one, so a busy node
makes one completion write per batch rather than one per job, and an idle node adds no delay. A
result is applied only while its `(id, attempt, owner)` fence holds; the others are dropped and
logged, because their job was taken away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from jobyard import failpoints
from jobyard.store.base import JobResult, Store

__all__ = ["Completer"]

log = logging.getLogger("jobyard.completer")

_MAX_BATCH = 1000


class Completer:
    def __init__(self, store: Store, on_flushed: Callable[[], None]) -> None:
        self._store = store
        self._on_flushed = on_flushed
        self._pending: list[JobResult] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0  # results whose fence failed: their job had been taken away

    def submit(self, result: JobResult) -> None:
        self._pending.append(result)
        self._ready.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="jobyard-completer")

    async def stop(self) -> None:
        """Flush everything submitted so far, then end. Idempotent; safe before start."""
        self._stopping = True
        self._ready.set()
        if self._task is not None:
            await self._task
        elif self._pending:
            await self._flush_all()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            await self._flush_all()
            if self._stopping and not self._pending:
                return

    async def _flush_all(self) -> None:
        delay = 0.05
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            try:
                failpoints.hit("before_complete")
                applied = await self._store.complete_jobs(batch)
            except Exception:
                # Keep the results and try again: losing them would only cost a re-run
                # (at-least-once), but keeping them costs nothing.
                log.exception("recording %d job results failed; retrying", len(batch))
                self._pending[:0] = batch
                if self._stopping and delay > 2:
                    log.error("giving up on %d results at shutdown", len(self._pending))
                    self._pending.clear()
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for result in batch:
                if result.job_id not in applied:
                    self.dropped += 1
                    log.warning(
                        "dropped the result of job %d attempt %d: the job was taken away "
                        "from node %s",
                        result.job_id,
                        result.attempt,
                        result.owner,
                    )
            self._on_flushed()
