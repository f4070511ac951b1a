"""The elector's local view of leadership, on real stores, with an injected monotonic clock; and,
on PostgreSQL, a new term waiting for the old term's maintenance statement in flight."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from jobyard.dispatcher.leader import TRUST_FRACTION, Elector
from jobyard.store.ports import Store
from jobyard.store.records import LeaderTerm

LEASE = timedelta(seconds=10)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Faulty:
    """A real store whose leader calls can be slowed (in injected time) or made to fail."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self.advance_during_call = 0.0
        self.fail = False

    async def try_acquire_leader(self, *args: Any, **kwargs: Any) -> LeaderTerm | None:
        self._clock.now += self.advance_during_call
        if self.fail:
            raise ConnectionError("database unreachable")
        return await self._store.try_acquire_leader(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def elector(store: Any, node_id: str, clock: Clock) -> Elector:
    return Elector(store, node_id, lease=LEASE, interval=timedelta(seconds=1), clock=clock)


async def test_a_node_stops_trusting_its_term_before_the_lease_can_expire(store: Store) -> None:
    clock = Clock()
    e = elector(store, "n1", clock)
    assert await e.attempt()
    clock.now += LEASE.total_seconds() * TRUST_FRACTION - 0.01
    assert e.is_leader
    clock.now += 0.02
    assert not e.is_leader  # no renewal happened: it stops acting on its own


async def test_slow_successful_renewal_does_not_extend_trust_past_its_start(
    store: Store,
) -> None:
    clock = Clock()
    faulty = Faulty(store, clock)
    e = elector(faulty, "n1", clock)
    assert await e.attempt()
    started = clock.now
    faulty.advance_during_call = 5.0  # the renewal takes 5 s to come back
    assert await e.attempt()
    clock.now = started + LEASE.total_seconds() * TRUST_FRACTION + 0.01
    assert not e.is_leader


async def test_failing_renewals_keep_the_term_only_until_trust_runs_out(store: Store) -> None:
    clock = Clock()
    faulty = Faulty(store, clock)
    e = elector(faulty, "n1", clock)
    assert await e.attempt()
    faulty.fail = True
    clock.now += 2
    assert await e.attempt()  # an error is not a loss; the trust window still holds
    clock.now += LEASE.total_seconds()
    assert not await e.attempt()


async def test_a_second_process_with_the_same_node_id_cannot_share_the_term(
    store: Store,
) -> None:
    clock = Clock()
    first, twin = elector(store, "same-name", clock), elector(store, "same-name", clock)
    assert await first.attempt()
    assert not await twin.attempt()
    assert await first.attempt()  # the real holder still renews its own term


async def test_leadership_is_lost_when_another_term_replaces_ours(store: Store) -> None:
    clock = Clock()
    e = elector(store, "n1", clock)
    assert await e.attempt()
    term = e.term
    assert term is not None
    assert await store.resign_leader(term)  # as if the lease had expired and been taken
    assert await store.try_acquire_leader("n2", LEASE) is not None
    assert not await e.attempt()
    assert e.term is None


async def test_resigning_reports_the_end_of_the_term(store: Store) -> None:
    clock = Clock()
    e = elector(store, "n1", clock)
    seen: list[tuple[str | None, float]] = []
    e.on_term = lambda term, until: seen.append((term and term.leader_id, until))
    assert await e.attempt()
    await e.stop(resign=True)
    assert seen == [("n1", 1000.0 + LEASE.total_seconds() * TRUST_FRACTION), (None, 1000.0)]
    assert await store.get_leader() is None


async def test_a_new_term_waits_for_the_old_terms_statement_in_flight(pg_url: str) -> None:
    """PostgreSQL: a fenced maintenance statement share-locks the lease row, so a new election
    (an update of that row) waits until the statement has committed: the old term's last
    statement can never land inside the next term."""
    from datetime import UTC, datetime

    import psycopg

    from jobyard import open_store
    from jobyard.store.postgres.store import _Q

    store = open_store(pg_url)
    holder = await psycopg.AsyncConnection.connect(pg_url)  # not autocommit: stays open
    try:
        old = await store.try_acquire_leader("n1", LEASE)
        assert old is not None
        params = {"now": None, "leader": old.leader_id, "elected_at": old.elected_at}
        await holder.execute(_Q["delete_dead_nodes"], params)  # fence held: the row is locked
        later = datetime.now(UTC) + LEASE + timedelta(seconds=5)  # n1's lease is long over
        election = asyncio.create_task(store.try_acquire_leader("n2", LEASE, now=later))
        async with asyncio.timeout(10):
            while True:  # until the election waits for the lock the statement holds
                async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as look:
                    cur = await look.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> %s",
                        (holder.info.backend_pid,),
                    )
                    row = await cur.fetchone()
                if row and row[0]:
                    break
                await asyncio.sleep(0.01)
        assert not election.done()
        await holder.commit()
        term = await election
        assert term is not None
        assert term.leader_id == "n2"
    finally:
        await holder.close()
        await store.close()
