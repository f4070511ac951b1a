"""Hooks with many observers: the server's metrics and an application's own both run, and no
observer can break a job or another observer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobyard import Config, Dispatcher, Job, JobStatus, Outcome, Queue, open_store
from jobyard.dispatcher.hooks import Observers
from jobyard.store.ports import Store

FAST = {"job_poll_interval": 0.05, "heartbeat_interval": 0.2, "leader_lease_duration": 1.0}


# -- Observers ---------------------------------------------------------------------------------


def test_observers_are_called_in_the_order_they_were_added() -> None:
    seen: list[tuple[str, int]] = []
    hook: Observers[[int]] = Observers("hook")
    hook.add(lambda n: seen.append(("first", n)))

    @hook.add
    def second(n: int) -> None:
        seen.append(("second", n))

    hook(1)
    hook(2)
    assert seen == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]
    assert second(3) is None  # the decorator gives the function back
    assert len(hook) == 2


def test_an_observer_that_raises_is_logged_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    hook: Observers[[str]] = Observers("on_test")

    def broken(word: str) -> None:
        raise RuntimeError("observer bug")

    hook.add(broken)
    hook.add(seen.append)
    with caplog.at_level(logging.ERROR, logger="jobyard.hooks"):
        hook("still here")
    assert seen == ["still here"]
    (record,) = caplog.records
    assert "on_test" in record.getMessage()
    assert record.exc_info is not None


def test_an_observer_added_twice_is_called_once_and_removed_once() -> None:
    seen: list[int] = []
    hook: Observers[[int]] = Observers("hook")
    hook.add(seen.append)
    hook.add(seen.append)  # an equal bound method: the same observer
    hook(1)
    hook.remove(seen.append)
    hook(2)
    assert seen == [1]
    with pytest.raises(ValueError, match="not an observer of hook"):
        hook.remove(seen.append)


def test_an_observer_removed_while_observers_run_is_called_until_that_call_ends() -> None:
    seen: list[str] = []
    hook: Observers[[]] = Observers("hook")

    def unhook_the_next() -> None:
        seen.append("first")
        hook.remove(second)

    def second() -> None:
        seen.append("second")

    hook.add(unhook_the_next)
    hook.add(second)
    hook()
    hook.remove(unhook_the_next)
    hook()
    assert seen == ["first", "second"]


def test_the_outcome_that_on_job_end_observers_receive_is_importable_from_jobyard() -> None:
    import jobyard
    from jobyard.store import records

    assert jobyard.Outcome is records.Outcome
    assert "Outcome" in jobyard.__all__


# -- the dispatcher's hooks --------------------------------------------------------------------


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    opened = open_store(sqlite_url)
    await opened.migrate()
    yield opened
    await opened.close()


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[None]:
    task = asyncio.create_task(dispatcher.start())
    try:
        yield
    finally:
        await dispatcher.stop()
        await task


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_every_observer_of_a_job_runs_and_a_raising_one_breaks_neither_the_others_nor_the_job(
    store: Store,
) -> None:
    queue = Queue(store)
    dispatcher = Dispatcher(Config(**FAST), store, queue)
    seen: list[tuple[str, int, Any]] = []

    async def execute(job: Job) -> None:
        seen.append(("executor", job.id, None))

    def broken(*args: Any) -> None:
        raise RuntimeError("observer bug")

    dispatcher.register_executor("t", execute)
    dispatcher.on_job_start.add(broken)
    dispatcher.on_job_start.add(lambda job: seen.append(("start", job.id, None)))
    dispatcher.on_job_end.add(broken)
    dispatcher.on_job_end.add(lambda job, outcome, s: seen.append(("end", job.id, outcome)))
    dispatcher.on_job_end.add(lambda job, outcome, s: seen.append(("end again", job.id, outcome)))
    async with running(dispatcher):
        job = await queue.enqueue("t", {})
        await until(lambda: len(seen) == 4)
    assert seen == [
        ("start", job.id, None),
        ("executor", job.id, None),
        ("end", job.id, Outcome.COMPLETED),
        ("end again", job.id, Outcome.COMPLETED),
    ]
    final = await store.get_job(job.id)
    assert final is not None
    assert final.status is JobStatus.COMPLETED


@pytest.mark.parametrize("hook", ["on_job_start", "on_job_end"])
def test_assigning_a_function_to_a_hook_is_refused_with_what_to_do_instead(
    store: Store, hook: str
) -> None:
    dispatcher = Dispatcher(Config(**FAST), store, Queue(store))
    with pytest.raises(AttributeError, match=rf"call dispatcher\.{hook}\.add\(fn\) instead"):
        setattr(dispatcher, hook, lambda *args: None)
    assert len(getattr(dispatcher, hook)) == 0  # nothing was replaced or added


async def test_leadership_observers_all_see_the_terms_this_node_wins(store: Store) -> None:
    dispatcher = Dispatcher(Config(**FAST), store, Queue(store))
    first: list[str | None] = []
    second: list[str | None] = []
    dispatcher.on_leadership(lambda t, _: first.append(t.leader_id if t else None))
    dispatcher.on_leadership(lambda t, _: second.append(t.leader_id if t else None))
    async with running(dispatcher):
        await until(lambda: dispatcher.is_leader)
    assert first[0] == second[0] == dispatcher.node_id
    assert first[-1] is second[-1] is None  # the resignation on a clean stop


async def test_on_leadership_none_removes_every_leadership_observer(store: Store) -> None:
    dispatcher = Dispatcher(Config(**FAST), store, Queue(store))
    seen: list[object] = []
    dispatcher.on_leadership(lambda t, _: seen.append(t))
    dispatcher.on_leadership(None)
    async with running(dispatcher):
        await until(lambda: dispatcher.is_leader)
    assert seen == []


async def test_metrics_still_count_when_a_user_observer_is_added_after_create_app(
    sqlite_url: str, tmp_path: Path
) -> None:
    from jobyard.api import ServerSettings, create_app
    from jobyard.runtime import build_runtime

    rt = build_runtime(Config(database_url=sqlite_url, data_dir=tmp_path / "data", **FAST))
    await rt.store.migrate()
    rt.dispatcher.register_executor("ping", lambda job: None)
    app = create_app(rt, ServerSettings(), run_worker=False)
    mine: list[Outcome] = []
    rt.dispatcher.on_job_end.add(lambda job, outcome, seconds: mine.append(outcome))
    async with running(rt.dispatcher):
        await rt.queue.enqueue("ping", {})
        await until(lambda: mine == [Outcome.COMPLETED])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        metrics = (await client.get("/metrics")).text
    await rt.close()
    assert 'jobyard_attempts_finished_total{outcome="completed",type="ping"} 1.0' in metrics
    assert 'jobyard_job_wait_seconds_count{type="ping"} 1.0' in metrics
