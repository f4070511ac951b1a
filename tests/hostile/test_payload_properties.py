"""Payloads are data: any JSON value goes in and comes back, on both stores, and text that no
store can hold is refused before anything is written.

What comes back is exactly what went in on SQLite (the JSON text is stored as written). On
PostgreSQL the payload is `jsonb`, which keeps numbers as `numeric` and prints them back in
plain decimal, so two things change, always the same way (`pg_normalized` below):

- `-0.0` comes back as `0.0` (numeric has no negative zero);
- a float of magnitude 1e16 or more (Python writes it with an exponent, `1e+16`) comes back as
  the *int* with the same decimal digits: `1e16` as `10000000000000000`. That int equals the
  float only when the float's binary value is that decimal exactly (1e16, 1e22 yes; 1.5e300
  no), so such floats do not survive a round trip on PostgreSQL as floats.

Everything else is unchanged: ints of any size (both stores keep arbitrary precision), every
other finite float, and all text without NUL. Infinity and NaN cannot be sent at all (the
queue writes strict JSON), so `1e400` is impossible too: Python reads it as infinity.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobyard import Job, PayloadError, Queue
from jobyard.store.records import JobFilter
from tests.hostile.helpers import StoreRunner

# Text a store can hold: valid Unicode (no lone surrogates) without NUL.
STORABLE_TEXT = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"),
    max_size=24,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | STORABLE_TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(STORABLE_TEXT, children, max_size=4)
    ),
    max_leaves=24,
)

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def pg_normalized(value: Any) -> Any:
    """What PostgreSQL's jsonb gives back for `value` (see the module docstring)."""
    if isinstance(value, float):
        if value == 0.0:
            return 0.0
        if abs(value) >= 1e16:
            return int(Decimal(repr(value)))
        return value
    if isinstance(value, list):
        return [pg_normalized(v) for v in value]
    if isinstance(value, dict):
        return {k: pg_normalized(v) for k, v in value.items()}
    return value


def identical(a: Any, b: Any) -> bool:
    """Equal, of the same JSON type (True is not 1, 1.0 is not 1) and, for floats, of the
    same sign (-0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    return bool(a == b)


def expected_back(backend: str, value: Any) -> Any:
    return pg_normalized(value) if backend == "postgresql" else value


def fresh_queue(sr: StoreRunner) -> Queue:
    queue = Queue(sr.store)
    queue.declare("free")
    return queue


def enqueue(sr: StoreRunner, queue: Queue, payload: Any, *, sync: bool) -> Job:
    """Through the sync surface (a Flask view) or the async one (the same rows either way)."""
    if sync:
        return queue.enqueue_sync("free", payload)
    return sr.run(queue.enqueue("free", payload))


def test_any_json_value_round_trips(store_url: str) -> None:
    with StoreRunner(store_url) as sr:

        @PROPERTY_SETTINGS
        @given(payload=JSON_VALUES, sync=st.booleans())
        @example(payload=-0.0, sync=False)
        @example(payload=[1e16, 1.5e300, 1.7976931348623157e308, 5e-324, -1e-7], sync=False)
        @example(payload={"k": 0.1 + 0.2, "big": 2**53, "neg": -(2**53)}, sync=True)
        @example(payload={"": None, "\u2028": "\\u0000", "a\\": "\U0001f600\x7f\x01"}, sync=False)
        @example(payload={"'; DROP TABLE jobyard_jobs; --": "%_\\"}, sync=True)
        def round_trip(payload: Any, sync: bool) -> None:
            job = enqueue(sr, fresh_queue(sr), payload, sync=sync)
            stored = sr.run(sr.store.get_job(job.id))
            assert stored is not None
            want = expected_back(sr.backend, payload)
            assert identical(stored.payload, want), (payload, stored.payload)
            # The job the enqueue returned is the stored one, not the caller's object.
            assert identical(job.payload, stored.payload)

        round_trip()


NUMBER_CASES: Final = {
    # name: (payload, what SQLite gives back, what PostgreSQL gives back)
    "negative-zero": (-0.0, -0.0, 0.0),
    "float-1e16-becomes-int-on-pg": (1e16, 1e16, 10**16),
    "huge-float-not-equal-on-pg": (1.5e300, 1.5e300, int(Decimal("1.5e300"))),
    "int-beyond-64-bits": (10**400, 10**400, 10**400),
    "negative-int-beyond-64-bits": (-(2**64) - 1, -(2**64) - 1, -(2**64) - 1),
    "float-below-1e16-stays-a-float": (9999999999999998.0, 9999999999999998.0, 9999999999999998.0),
}


def test_documented_number_normalization(store_url: str) -> None:
    with StoreRunner(store_url) as sr:
        queue = fresh_queue(sr)
        for name, (payload, sqlite_back, postgresql_back) in NUMBER_CASES.items():
            job = sr.run(queue.enqueue("free", payload))
            stored = sr.run(sr.store.get_job(job.id))
            assert stored is not None
            want = postgresql_back if sr.backend == "postgresql" else sqlite_back
            assert identical(stored.payload, want), (name, stored.payload)
            assert identical(pg_normalized(payload), postgresql_back), name  # the model agrees
    assert not identical(1.5e300, int(Decimal("1.5e300")))  # so that one really changes


def _with_bad_text(value: Any, bad: str, where: str) -> Any:
    if where == "value":
        return {"ok": value, "bad": f"x{bad}y"}
    if where == "key":
        return {f"k{bad}": value}
    if where == "list":
        return [value, [bad]]
    return bad  # the whole payload


def test_text_no_store_can_hold_is_refused_and_nothing_is_stored(store_url: str) -> None:
    """NUL (PostgreSQL's jsonb cannot hold it) and lone surrogates (not Unicode), anywhere in
    the payload: PayloadError on both stores, for equal semantics, and no row."""
    with StoreRunner(store_url) as sr:

        def stored_jobs() -> int:
            return len(sr.run(sr.store.list_jobs(JobFilter(limit=100_000))))

        @PROPERTY_SETTINGS
        @given(
            value=JSON_VALUES,
            bad=st.just("\x00") | st.characters(categories=["Cs"]),
            where=st.sampled_from(["value", "key", "list", "whole"]),
            sync=st.booleans(),
        )
        @example(value=None, bad="\x00", where="key", sync=False)
        @example(value=None, bad="\ud800", where="value", sync=True)
        @example(value="\\", bad="\x00", where="list", sync=False)
        def refused(value: Any, bad: str, where: str, sync: bool) -> None:
            queue = fresh_queue(sr)
            before = stored_jobs()
            payload = _with_bad_text(value, bad, where)
            with pytest.raises(PayloadError):
                enqueue(sr, queue, payload, sync=sync)
            assert stored_jobs() == before

        refused()


def test_text_that_only_looks_like_nul_is_stored_verbatim(store_url: str) -> None:
    """The NUL check reads the JSON text; a literal backslash before `u0000` is not a NUL."""
    lookalikes = ["\\u0000", "\\\\u0000", "a\\u0000b", "\\x00", "\\0"]
    with StoreRunner(store_url) as sr:
        job = sr.run(fresh_queue(sr).enqueue("free", {t: t for t in lookalikes}))
        stored = sr.run(sr.store.get_job(job.id))
    assert stored is not None
    assert stored.payload == {t: t for t in lookalikes}
    assert all("\x00" not in t for t in lookalikes)


# Every fixed UTC offset Python allows, in whole minutes (ISO 8601 allows the same range).
OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def test_any_aware_run_at_is_kept_as_the_same_instant(
    store_url: str, request: pytest.FixtureRequest
) -> None:
    with StoreRunner(store_url) as sr:

        @PROPERTY_SETTINGS
        @given(
            when=st.datetimes(
                min_value=datetime(2000, 1, 1),
                max_value=datetime(2090, 1, 1),
                timezones=OFFSETS,
            )
        )
        @example(when=datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59))))
        @example(when=datetime(2030, 1, 1, tzinfo=timezone(-timedelta(hours=23, minutes=59))))
        def same_instant(when: datetime) -> None:
            job = sr.run(fresh_queue(sr).enqueue("free", None, run_at=when))
            stored = sr.run(sr.store.get_job(job.id))
            assert stored is not None
            # SQLite keeps epoch seconds as a float: equal to within a microsecond.
            assert abs(stored.run_at - when) <= timedelta(microseconds=1), (when, stored.run_at)
            assert stored.run_at.utcoffset() == timedelta(0)

        same_instant()
