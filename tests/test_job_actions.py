"""Retry and cancel have one meaning, through JobAdmin, in the API, the dashboard and the CLI:
each reports whether *this* call changed the job, so of many concurrent calls exactly one wins."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from jobyard import JobStatus, Queue, open_store
from jobyard.admin import JobAdmin
from jobyard.model import JobNotFound
from jobyard.store.ports import Store
from tests.live_server import live_server

T = TypeVar("T")
CONCURRENT = 50


async def with_store(url: str, act: Callable[[Store], Awaitable[T]]) -> T:
    """Run `act` on a store of this test's own, beside the server's."""
    store = open_store(url)
    try:
        return await act(store)
    finally:
        await store.close()


async def cancelled_job(store: Store) -> int:
    """A job of a type no node serves, cancelled: ready to be retried, and never claimed."""
    queue = Queue(store)
    queue.declare("unserved")
    job = await queue.enqueue("unserved", None)
    assert await JobAdmin(store).cancel(job.id)
    return job.id


async def test_of_concurrent_retries_exactly_one_changes_the_job(store: Store) -> None:
    job_id = await cancelled_job(store)
    admin = JobAdmin(store)
    changed = await asyncio.gather(*(admin.retry(job_id) for _ in range(CONCURRENT)))
    assert changed.count(True) == 1
    job = await admin.get_job(job_id)
    assert job is not None
    assert job.status is JobStatus.PENDING


async def test_of_concurrent_cancels_exactly_one_changes_the_job(store: Store) -> None:
    queue = Queue(store)
    queue.declare("unserved")
    job = await queue.enqueue("unserved", None)
    admin = JobAdmin(store)
    changed = await asyncio.gather(*(admin.cancel(job.id) for _ in range(CONCURRENT)))
    assert changed.count(True) == 1


async def test_actions_say_why_they_changed_nothing(store: Store) -> None:
    queue = Queue(store)
    queue.declare("unserved")
    job = await queue.enqueue("unserved", None)
    admin = JobAdmin(store)
    retry = await admin.retry_job(job.id)
    assert (retry.changed, retry.message) == (False, f"job {job.id} is already pending")
    assert (await admin.cancel_job(job.id)).changed
    cancel = await admin.cancel_job(job.id)
    assert (cancel.changed, cancel.message) == (False, f"job {job.id} is already cancelled")
    for missing in (0, 999_999, 2**63):
        with pytest.raises(JobNotFound):
            await admin.retry(missing)
        with pytest.raises(JobNotFound):
            await admin.cancel(missing)


async def test_a_retry_wakes_the_local_dispatcher_only_when_it_changed_the_job(
    store: Store,
) -> None:
    job_id = await cancelled_job(store)
    woken: list[int] = []
    admin = JobAdmin(store, on_requeue=lambda: woken.append(1))
    assert await admin.retry(job_id)
    assert not await admin.retry(job_id)
    assert woken == [1]


def test_api_answers_200_once_and_409_to_the_other_concurrent_retries(
    store_url: str, tmp_path: Path
) -> None:
    with live_server(store_url, tmp_path / "data") as live:
        job_id = asyncio.run(with_store(store_url, cancelled_job))

        def retry(_: int) -> int:
            with httpx.Client(base_url=live.url, timeout=20) as http:
                return http.post(f"/api/jobs/{job_id}/retry").status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(retry, range(CONCURRENT)))
        assert sorted(set(codes)) == [200, 409]
        assert codes.count(200) == 1
        with httpx.Client(base_url=live.url, timeout=10) as http:
            again = http.post(f"/api/jobs/{job_id}/retry")
            assert again.status_code == 409
            assert again.json() == {"detail": f"job {job_id} is already pending"}
