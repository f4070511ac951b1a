"""Queue validation: everything the queue refuses is refused before a row is written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, Field

import jobyard
from jobyard import (
    ConfigError,
    Job,
    JobStatus,
    PayloadError,
    PayloadTooLarge,
    UnknownJobType,
)
from jobyard.store.ports import Store
from jobyard.workspaces import (
    SessionInitPayload,
    WorkspaceInitPayload,
    enqueue_session_init,
    enqueue_session_init_sync,
    enqueue_workspace_init,
    enqueue_workspace_init_sync,
)

YEAR = timedelta(days=366)


class Email(BaseModel):
    to: str = Field(min_length=3)
    subject: str
    retries: int = 0


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    opened = jobyard.open_store(sqlite_url)
    yield opened
    await opened.close()


@pytest.fixture
def queue(store: Store) -> jobyard.Queue:
    q = jobyard.Queue(store)
    q.declare("free")  # any JSON payload
    q.declare("email", Email)
    # The workspace platform's types: real models with aliases, declared as the platform does.
    q.declare("workspace_init", WorkspaceInitPayload)
    q.declare("session_init", SessionInitPayload)
    return q


async def assert_nothing_stored(store: Store) -> None:
    assert await store.list_jobs() == []


def deep_list(levels: int) -> list[Any]:
    nested: list[Any] = []
    for _ in range(levels):
        nested = [nested]
    return nested


# -- job types ---------------------------------------------------------------------------------


async def test_enqueue_of_undeclared_type_raises_unknown_job_type_and_stores_nothing(
    store: Store, queue: jobyard.Queue
) -> None:
    with pytest.raises(UnknownJobType, match="never_declared"):
        await queue.enqueue("never_declared", {"a": 1})

    await assert_nothing_stored(store)


async def test_a_new_queue_declares_no_type(store: Store) -> None:
    assert jobyard.Queue(store).job_types == {}


@pytest.mark.parametrize(
    "name",
    ["", "1abc", "a b", "x;drop table", "a" * 200, "_x", "-x", "a/b", "a\x00", "é"],
)
def test_declare_refuses_invalid_job_type_names(queue: jobyard.Queue, name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid name"):
        queue.declare(name)

    assert name not in queue.job_types


@pytest.mark.parametrize("name", ["a", "Email", "a" * 128, "billing.invoice:v2", "x-y_z"])
def test_declare_accepts_valid_job_type_names(queue: jobyard.Queue, name: str) -> None:
    spec = queue.declare(name)

    assert spec.name == name
    assert name in queue.job_types


def test_declare_refuses_129_char_name(queue: jobyard.Queue) -> None:
    with pytest.raises(ConfigError):
        queue.declare("a" * 129)


def test_declare_refuses_a_payload_model_that_is_not_a_pydantic_model(
    queue: jobyard.Queue,
) -> None:
    with pytest.raises(ConfigError, match="BaseModel"):
        queue.declare("thing", dict)  # type: ignore[arg-type]

    assert "thing" not in queue.job_types


def test_redeclaring_without_a_model_keeps_the_model(queue: jobyard.Queue) -> None:
    spec = queue.declare("email")

    assert spec.payload_model is Email
    assert queue.job_types["email"].payload_model is Email


# -- payload models ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"to": "x", "subject": "hi"},  # too short
        {"subject": "hi"},  # missing field
        {"to": "a@b.c", "subject": "hi", "retries": "lots"},
        "a@b.c",
        None,
    ],
)
async def test_declared_model_refuses_bad_payload_and_stores_nothing(
    store: Store, queue: jobyard.Queue, payload: Any
) -> None:
    with pytest.raises(PayloadError, match="email"):
        await queue.enqueue("email", payload)

    await assert_nothing_stored(store)


async def test_declared_model_accepts_a_matching_payload(
    store: Store, queue: jobyard.Queue
) -> None:
    job = await queue.enqueue("email", {"to": "a@b.c", "subject": "hi"})

    assert job.payload == {"to": "a@b.c", "subject": "hi", "retries": 0}
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.payload == {"to": "a@b.c", "subject": "hi", "retries": 0}


async def test_seed_payload_refuses_unknown_keys(store: Store, queue: jobyard.Queue) -> None:
    with pytest.raises(PayloadError):
        await queue.enqueue("workspace_init", {"workspaceId": "w-1", "extra": 1})

    await assert_nothing_stored(store)


async def test_payload_of_another_model_is_refused(store: Store, queue: jobyard.Queue) -> None:
    with pytest.raises(PayloadError, match="WorkspaceInitPayload"):
        await queue.enqueue("workspace_init", SessionInitPayload(session_id="s-1"))

    await assert_nothing_stored(store)


@pytest.mark.parametrize("workspace_id", ["", "x" * 201])
async def test_workspace_id_length_is_checked(
    store: Store, queue: jobyard.Queue, workspace_id: str
) -> None:
    with pytest.raises(PayloadError, match="workspaceId"):
        await queue.enqueue("workspace_init", {"workspaceId": workspace_id})

    await assert_nothing_stored(store)


@pytest.mark.parametrize("helper", ["workspace", "session", "workspace_sync", "session_sync"])
@pytest.mark.parametrize("bad_id", ["", "x" * 201])
async def test_seed_enqueue_helpers_raise_payload_error_for_a_bad_id(
    store: Store, queue: jobyard.Queue, helper: str, bad_id: str
) -> None:
    async def call() -> Job:
        if helper == "workspace":
            return await enqueue_workspace_init(queue, bad_id)
        if helper == "session":
            return await enqueue_session_init(queue, bad_id)
        if helper == "workspace_sync":
            return await asyncio.to_thread(enqueue_workspace_init_sync, queue, bad_id)
        return await asyncio.to_thread(enqueue_session_init_sync, queue, bad_id)

    with pytest.raises(PayloadError):
        await call()


# -- seed payloads serialize exactly as the seed's ----------------------------------------------


async def test_workspace_init_payload_serializes_as_the_seed(
    store: Store, queue: jobyard.Queue
) -> None:
    job = await enqueue_workspace_init(queue, "w-1")

    assert job.type == "workspace_init"
    assert job.payload == {"workspaceId": "w-1"}
    assert job.status is JobStatus.PENDING
    assert job.attempt == 0
    assert job.max_attempts == 3
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.payload == {"workspaceId": "w-1"}
    assert stored.type == "workspace_init"


async def test_session_init_payload_serializes_as_the_seed(
    store: Store, queue: jobyard.Queue
) -> None:
    job = await enqueue_session_init(queue, "s-1")

    assert job.type == "session_init"
    assert job.payload == {"sessionId": "s-1"}
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.payload == {"sessionId": "s-1"}


@pytest.mark.parametrize(
    "payload",
    [{"workspaceId": "w-1"}, {"workspace_id": "w-1"}, WorkspaceInitPayload(workspace_id="w-1")],
)
async def test_workspace_init_payload_given_any_way_is_stored_in_seed_form(
    store: Store, queue: jobyard.Queue, payload: Any
) -> None:
    job = await queue.enqueue("workspace_init", payload)

    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.payload == {"workspaceId": "w-1"}


# -- what JSON cannot hold ---------------------------------------------------------------------


async def test_oversize_payload_raises_payload_too_large_and_stores_nothing(
    store: Store,
) -> None:
    queue = jobyard.Queue(store, max_payload_bytes=100)
    queue.declare("free")

    with pytest.raises(PayloadTooLarge, match="100"):
        await queue.enqueue("free", "x" * 200)

    await assert_nothing_stored(store)


async def test_payload_size_is_measured_in_utf8_bytes(store: Store) -> None:
    queue = jobyard.Queue(store, max_payload_bytes=100)
    queue.declare("free")
    # 40 characters but 120 bytes of UTF-8 (plus two quotes).
    with pytest.raises(PayloadTooLarge):
        await queue.enqueue("free", "€" * 40)

    await assert_nothing_stored(store)


async def test_payload_at_the_size_limit_is_accepted(store: Store) -> None:
    queue = jobyard.Queue(store, max_payload_bytes=100)
    queue.declare("free")
    payload = "x" * 98  # 98 characters plus two quotes: exactly 100 bytes

    job = await queue.enqueue("free", payload)

    assert len(json.dumps(payload).encode()) == 100
    assert job.payload == payload


def test_payload_too_large_is_a_payload_error() -> None:
    assert issubclass(PayloadTooLarge, PayloadError)


@pytest.mark.parametrize(
    "payload",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        {"a": float("nan")},
        [1, float("inf")],
    ],
)
async def test_nan_and_infinity_are_refused(
    store: Store, queue: jobyard.Queue, payload: Any
) -> None:
    with pytest.raises(PayloadError):
        await queue.enqueue("free", payload)

    await assert_nothing_stored(store)


@pytest.mark.parametrize("payload", ["a\x00b", {"k": "\x00"}, {"k\x00": 1}])
async def test_nul_character_is_refused(store: Store, queue: jobyard.Queue, payload: Any) -> None:
    with pytest.raises(PayloadError, match="NUL"):
        await queue.enqueue("free", payload)

    await assert_nothing_stored(store)


@pytest.mark.parametrize("payload", ["\ud800", {"k": "a\udfffb"}, {"\ud800": 1}])
async def test_lone_surrogate_is_refused(store: Store, queue: jobyard.Queue, payload: Any) -> None:
    with pytest.raises(PayloadError, match="Unicode"):
        await queue.enqueue("free", payload)

    await assert_nothing_stored(store)


@pytest.mark.parametrize("payload", [object(), {"a": {1, 2}}, b"bytes", {("a", "b"): 1}])
async def test_non_json_object_is_refused(store: Store, queue: jobyard.Queue, payload: Any) -> None:
    with pytest.raises(PayloadError, match="not JSON"):
        await queue.enqueue("free", payload)

    await assert_nothing_stored(store)


async def test_deeply_nested_payload_is_refused_without_crashing(
    store: Store, queue: jobyard.Queue
) -> None:
    payload = deep_list(100_000)

    with pytest.raises(PayloadError, match="nested too deeply"):
        await queue.enqueue("free", payload)

    await assert_nothing_stored(store)
    # The queue still works afterwards.
    job = await queue.enqueue("free", {"ok": True})
    assert job.payload == {"ok": True}


# -- run_at ------------------------------------------------------------------------------------


async def test_naive_datetime_run_at_is_refused(store: Store, queue: jobyard.Queue) -> None:
    with pytest.raises(PayloadError, match="timezone-aware"):
        await queue.enqueue("free", 1, run_at=datetime.now())

    await assert_nothing_stored(store)


@pytest.mark.parametrize(
    "run_at",
    [
        timedelta(days=366 * 100 + 1),
        timedelta.max,
        datetime.now(UTC) + YEAR * 101,
        datetime.max.replace(tzinfo=UTC),
    ],
)
async def test_run_at_more_than_100_years_away_is_refused(
    store: Store, queue: jobyard.Queue, run_at: datetime | timedelta
) -> None:
    with pytest.raises(PayloadError, match="100 years"):
        await queue.enqueue("free", 1, run_at=run_at)

    await assert_nothing_stored(store)


async def test_run_at_in_the_distant_past_is_refused_with_payload_error(
    store: Store, queue: jobyard.Queue
) -> None:
    run_at = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))

    with pytest.raises(PayloadError):
        await queue.enqueue("free", 1, run_at=run_at)


@pytest.mark.parametrize("delay", [timedelta(seconds=-1), timedelta(microseconds=-1)])
async def test_negative_timedelta_run_at_is_refused(
    store: Store, queue: jobyard.Queue, delay: timedelta
) -> None:
    with pytest.raises(PayloadError):
        await queue.enqueue("free", 1, run_at=delay)

    await assert_nothing_stored(store)


@pytest.mark.parametrize("run_at", [10, "2030-01-01T00:00:00Z", 1.5])
async def test_run_at_of_other_type_is_refused(
    store: Store, queue: jobyard.Queue, run_at: Any
) -> None:
    with pytest.raises(PayloadError, match="run_at"):
        await queue.enqueue("free", 1, run_at=run_at)

    await assert_nothing_stored(store)


async def test_run_at_as_delay_schedules_the_job_later(store: Store, queue: jobyard.Queue) -> None:
    before = datetime.now(UTC)

    job = await queue.enqueue("free", 1, run_at=timedelta(hours=1))

    assert job.run_at >= before + timedelta(hours=1) - timedelta(seconds=1)
    assert job.run_at <= datetime.now(UTC) + timedelta(hours=1) + timedelta(seconds=1)


async def test_aware_run_at_in_another_zone_is_kept_as_the_same_instant(
    store: Store, queue: jobyard.Queue
) -> None:
    run_at = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))

    job = await queue.enqueue("free", 1, run_at=run_at)

    assert job.run_at == run_at


# -- priority and max_attempts -----------------------------------------------------------------


@pytest.mark.parametrize("priority", [2**31, -(2**31) - 1, 2**63, True, False, 1.0, "1", None])
async def test_priority_outside_32_bits_or_not_an_int_is_refused(
    store: Store, queue: jobyard.Queue, priority: Any
) -> None:
    with pytest.raises(PayloadError, match="priority"):
        await queue.enqueue("free", 1, priority=priority)

    await assert_nothing_stored(store)


@pytest.mark.parametrize("priority", [2**31 - 1, -(2**31), 0])
async def test_priority_at_the_32_bit_bounds_is_accepted(
    store: Store, queue: jobyard.Queue, priority: int
) -> None:
    job = await queue.enqueue("free", 1, priority=priority)

    assert job.priority == priority


@pytest.mark.parametrize("attempts", [0, -1, 1001, True, 2.0])
async def test_max_attempts_outside_1_to_1000_is_refused(
    store: Store, queue: jobyard.Queue, attempts: Any
) -> None:
    with pytest.raises(PayloadError, match="max_attempts"):
        await queue.enqueue("free", 1, max_attempts=attempts)

    await assert_nothing_stored(store)


@pytest.mark.parametrize("attempts", [1, 1000])
async def test_max_attempts_at_the_bounds_is_accepted(
    store: Store, queue: jobyard.Queue, attempts: int
) -> None:
    job = await queue.enqueue("free", 1, max_attempts=attempts)

    assert job.max_attempts == attempts


@pytest.mark.parametrize("kwargs", [{"max_payload_bytes": 0}, {"default_max_attempts": 0}])
def test_queue_refuses_invalid_settings(store: Store, kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        jobyard.Queue(store, **kwargs)


# -- enqueue_many ------------------------------------------------------------------------------


async def test_enqueue_many_with_one_bad_payload_stores_none(
    store: Store, queue: jobyard.Queue
) -> None:
    good = {"to": "a@b.c", "subject": "hi"}

    with pytest.raises(PayloadError):
        await queue.enqueue_many("email", [good, good, {"to": "x"}, good])

    await assert_nothing_stored(store)


async def test_enqueue_many_with_one_unserializable_payload_stores_none(
    store: Store, queue: jobyard.Queue
) -> None:
    with pytest.raises(PayloadError):
        await queue.enqueue_many("free", [1, 2, float("nan"), 4])

    await assert_nothing_stored(store)


async def test_enqueue_many_stores_all_good_payloads(store: Store, queue: jobyard.Queue) -> None:
    jobs = await queue.enqueue_many("free", [{"n": 1}, {"n": 2}, {"n": 3}])

    assert [j.payload for j in jobs] == [{"n": 1}, {"n": 2}, {"n": 3}]
    stored = await store.list_jobs()
    assert sorted(j.id for j in stored) == sorted(j.id for j in jobs)


async def test_enqueue_many_of_nothing_stores_nothing(store: Store, queue: jobyard.Queue) -> None:
    assert await queue.enqueue_many("free", []) == []

    await assert_nothing_stored(store)


# -- enqueue_sync ------------------------------------------------------------------------------


def test_enqueue_sync_works_from_plain_sync_code(sqlite_url: str) -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # really no event loop here
    store = jobyard.open_store(sqlite_url)
    try:
        queue = jobyard.Queue(store)
        queue.declare("workspace_init", WorkspaceInitPayload)
        queue.declare("session_init", SessionInitPayload)

        job = queue.enqueue_sync("workspace_init", {"workspaceId": "w-1"})
        seed_job = enqueue_session_init_sync(queue, "s-1")

        assert isinstance(job, Job)
        assert job.id > 0
        assert job.type == "workspace_init"
        assert job.payload == {"workspaceId": "w-1"}
        assert job.status is JobStatus.PENDING
        assert seed_job.payload == {"sessionId": "s-1"}
        stored = asyncio.run(store.list_jobs())
        assert sorted(j.id for j in stored) == sorted([job.id, seed_job.id])
    finally:
        asyncio.run(store.close())


def test_enqueue_sync_refuses_bad_payload_and_stores_nothing(sqlite_url: str) -> None:
    store = jobyard.open_store(sqlite_url)
    try:
        queue = jobyard.Queue(store)
        queue.declare("workspace_init", WorkspaceInitPayload)

        with pytest.raises(PayloadError):
            queue.enqueue_sync("workspace_init", {"workspaceId": ""})
        with pytest.raises(UnknownJobType):
            queue.enqueue_sync("nope", {})

        assert asyncio.run(store.list_jobs()) == []
    finally:
        asyncio.run(store.close())


# -- notify ------------------------------------------------------------------------------------


async def test_notify_func_is_called_once_per_successful_enqueue(
    store: Store, queue: jobyard.Queue
) -> None:
    calls: list[None] = []
    queue.set_notify_func(lambda: calls.append(None))

    await queue.enqueue("free", 1)
    assert len(calls) == 1
    await enqueue_workspace_init(queue, "w-1")
    assert len(calls) == 2
    await queue.enqueue_many("free", [1, 2, 3])
    assert len(calls) == 3
    await asyncio.to_thread(queue.enqueue_sync, "free", 2)
    assert len(calls) == 4


async def test_notify_func_is_not_called_for_a_refused_enqueue(
    store: Store, queue: jobyard.Queue
) -> None:
    calls: list[None] = []
    queue.set_notify_func(lambda: calls.append(None))

    with pytest.raises(UnknownJobType):
        await queue.enqueue("nope", 1)
    with pytest.raises(PayloadError):
        await queue.enqueue("free", float("nan"))
    with pytest.raises(PayloadError):
        await queue.enqueue("free", 1, priority=2**40)
    with pytest.raises(PayloadError):
        await queue.enqueue_many("free", [1, object()])

    assert calls == []
    await assert_nothing_stored(store)


async def test_notify_func_is_not_called_for_an_empty_enqueue_many(
    store: Store, queue: jobyard.Queue
) -> None:
    calls: list[None] = []
    queue.set_notify_func(lambda: calls.append(None))

    await queue.enqueue_many("free", [])

    assert calls == []


async def test_notify_func_can_be_cleared(store: Store, queue: jobyard.Queue) -> None:
    calls: list[None] = []
    queue.set_notify_func(lambda: calls.append(None))
    queue.set_notify_func(None)

    await queue.enqueue("free", 1)

    assert calls == []
    assert len(await store.list_jobs()) == 1


async def test_queue_takes_its_defaults_from_config(store: Store) -> None:
    config = jobyard.Config(max_payload_bytes=50, max_attempts=7)
    queue = jobyard.Queue(store, config=config)
    queue.declare("free")
    job = await queue.enqueue("free", {"small": 1})
    assert job.max_attempts == 7
    with pytest.raises(PayloadTooLarge):
        await queue.enqueue("free", {"big": "x" * 100})
    assert jobyard.Queue(store, config=config, default_max_attempts=2).default_max_attempts == 2


def test_config_refuses_more_attempts_than_a_job_may_have() -> None:
    with pytest.raises(jobyard.ConfigError, match="max_attempts"):
        jobyard.Config(max_attempts=1001)
