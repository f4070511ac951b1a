"""Leader election: one lease row in the database, scoped to a term.

States of one node:

    follower ──elect ok──▶ leader ──renew ok──▶ leader (trust extended)
        ▲                    │
        └── renew refused ───┤   (another term holds, or ours expired)
        └── trust expired ───┘   (renewals slow or failing: step down locally first)
        └── resign (stop) ───┘   (lease row deleted: a follower takes over at once)

The database decides who holds the lease, comparing expiry with its own clock only. Locally, a
node believes it leads only until `attempt start + 0.9 * lease` on its monotonic clock: the
database set the expiry at least `lease` after the attempt began, so the node always stops
believing before the lease can expire, however slow or failed the next renewal is. That is why
two nodes never believe they lead at the same instant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from jobyard.dispatcher.waiting import wait_event
from jobyard.store.ports import LeaderStore
from jobyard.store.records import LeaderTerm

__all__ = ["Elector"]

log = logging.getLogger("jobyard.leader")

TRUST_FRACTION = 0.9


class Elector:
    def __init__(
        self,
        store: LeaderStore,
        node_id: str,
        *,
        lease: timedelta,
        interval: timedelta,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._node_id = node_id
        self._lease = lease
        self._interval = interval.total_seconds()
        self._clock = clock
        self._term: LeaderTerm | None = None
        self._trust_until = 0.0
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set whenever leadership is gained or lost
        # Called after every attempt that leaves this node leading, with the term and the
        # monotonic instant its local trust ends, and with (None, now) when it resigns: the
        # evidence a leadership-history checker needs.
        self.on_term: Callable[[LeaderTerm | None, float], None] | None = None

    @property
    def term(self) -> LeaderTerm | None:
        """The term this node holds, if it still trusts it."""
        return self._term if self.is_leader else None

    @property
    def is_leader(self) -> bool:
        return self._term is not None and self._clock() < self._trust_until

    async def attempt(self) -> bool:
        """Elect or renew once; True if this node leads afterwards."""
        was_leader = self.is_leader
        started = self._clock()
        # Renewing our last term is safe even after local trust lapsed: the database renews it
        # only if it never expired, so no one else can have led meanwhile.
        term = self._term
        try:
            result = await self._store.try_acquire_leader(self._node_id, self._lease, term=term)
            if result is None and term is not None:
                # Our term ended (expired or replaced); stand for a fresh one right away.
                result = await self._store.try_acquire_leader(self._node_id, self._lease)
        except Exception:
            # Keep the term: the trust window alone decides how long we may still act on it.
            log.exception("leader election on node %s failed", self._node_id)
            self._notify(was_leader)
            return self.is_leader
        if result is None:
            self._term = None
        else:
            if term is None or result.elected_at != term.elected_at:
                log.info("node %s is leader (term %s)", self._node_id, result.elected_at)
            self._term = result
            self._trust_until = started + self._lease.total_seconds() * TRUST_FRACTION
            self._report(result, self._trust_until)
        self._notify(was_leader)
        return self.is_leader

    def _report(self, term: LeaderTerm | None, until: float) -> None:
        if self.on_term is None:
            return
        try:
            self.on_term(term, until)
        except Exception:
            # An observer must never cost the cluster its election loop.
            log.exception("the leadership hook raised; ignored")

    def _notify(self, was_leader: bool) -> None:
        if was_leader != self.is_leader:
            if was_leader:
                log.info("node %s is no longer leader", self._node_id)
            self.changed.set()

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="jobyard-elector")

    def poke(self) -> None:
        """Try for the lease now (the leader resigned): a follower takes over at once."""
        self._wakeup.set()

    async def _run(self) -> None:
        while not self._stop.is_set():
            self._wakeup.clear()
            await self.attempt()
            await wait_event(self._wakeup, self._interval)

    async def stop(self, *, resign: bool = True) -> None:
        """Stop campaigning and, by default, resign so a follower takes over at once.
        Idempotent; safe before start."""
        self._stop.set()
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        term, self._term = self._term, None
        if term is not None:
            self._report(None, self._clock())
        if resign and term is not None:
            try:
                if await self._store.resign_leader(term):
                    await self._store.notify_leader_change()
            except Exception:
                log.exception("resigning leadership failed; the lease will expire on its own")
