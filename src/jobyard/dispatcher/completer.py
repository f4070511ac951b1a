"""The completer: holds attempt results until the next write takes them, fenced.

A busy node writes its results together with its next claim (`Store.complete_and_claim`): one
transaction per cycle, not one per job and not one per batch. Results that finish while a
cycle is in flight wait for the next one, so an idle node adds no delay and a busy one batches
more. A batch taken by a cycle still counts as held until that cycle settles it or puts
it back, so the heartbeat never mistakes a job whose result is being written for a stray.
A result is applied only while its `(id, attempt, owner)` fence holds; the others are dropped
and logged, because their job was taken away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from jobyard import failpoints
from jobyard.store.ports import DispatchStore
from jobyard.store.records import JobResult

__all__ = ["Completer"]

log = logging.getLogger("jobyard.completer")

MAX_BATCH = 1000


class Completer:
    def __init__(self, store: DispatchStore) -> None:
        self._store = store
        self._pending: list[JobResult] = []
        self._taken: list[list[JobResult]] = []  # batches that cycles are writing now
        self.dropped = 0  # results whose fence failed: their job had been taken away

    def submit(self, result: JobResult) -> None:
        self._pending.append(result)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_keys(self) -> set[tuple[int, int]]:
        """(job id, attempt) of every result not yet recorded: held or being written."""
        keys = {(r.job_id, r.attempt) for r in self._pending}
        for batch in self._taken:
            keys.update((r.job_id, r.attempt) for r in batch)
        return keys

    def take(self) -> list[JobResult]:
        """Up to MAX_BATCH results for the next write; then `settle` them, or `put_back` them
        if the write fails."""
        if not self._pending:
            return []
        failpoints.hit("before_complete")  # before the batch leaves the buffer
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._taken.append(batch)
        return batch

    def _release(self, batch: Sequence[JobResult]) -> None:
        for i, taken in enumerate(self._taken):
            if taken is batch:
                del self._taken[i]
                return

    def put_back(self, batch: Sequence[JobResult]) -> None:
        # Keep them for the next attempt: losing them would only cost a re-run
        # (at-least-once), but keeping them costs nothing.
        self._release(batch)
        self._pending[:0] = batch

    def settle(self, batch: Sequence[JobResult], applied: set[int]) -> None:
        """The write of `batch` committed; log the results whose fence failed."""
        self._release(batch)
        for result in batch:
            if result.job_id not in applied:
                self.dropped += 1
                log.warning(
                    "dropped the result of job %d attempt %d: the job was taken away from node %s",
                    result.job_id,
                    result.attempt,
                    result.owner,
                )

    async def flush(self, *, give_up_after: float = 5.0) -> None:
        """Write everything still held (at shutdown), retrying a failing store for a while."""
        delay, waited = 0.05, 0.0
        while batch := self.take():
            try:
                applied = await self._store.complete_jobs(batch)
            except Exception:
                self.put_back(batch)
                if waited >= give_up_after:
                    log.error(
                        "giving up on %d results; their jobs will be rescued and run again",
                        len(self._pending),
                    )
                    self._pending.clear()
                    return
                log.exception("recording %d job results failed; retrying", len(batch))
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 1.0)
                continue
            self.settle(batch, applied)
