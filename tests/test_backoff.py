"""retry_delay: exponential backoff with jitter between half the ceiling and the ceiling."""

from __future__ import annotations

import math
import random
import sys
from itertools import pairwise

import pytest

from jobyard.dispatcher.backoff import retry_delay


def ceiling(attempt: int, base: float, cap: float) -> float:
    return min(cap, base * 2.0 ** (attempt - 1))


@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
@pytest.mark.parametrize(("base", "cap"), [(1.0, 3600.0), (0.5, 30.0), (2.0, 10.0), (0.001, 0.01)])
def test_delay_lies_between_half_the_ceiling_and_the_ceiling(
    seed: int, base: float, cap: float
) -> None:
    rng = random.Random(seed)
    for attempt in range(1, 30):
        top = ceiling(attempt, base, cap)
        for _ in range(50):
            delay = retry_delay(attempt, base, cap, rng)
            assert top / 2 <= delay <= top, (attempt, delay, top)


def test_same_seed_gives_the_same_delays() -> None:
    first = [retry_delay(a, 1.0, 3600.0, random.Random(7)) for a in range(1, 10)]
    second = [retry_delay(a, 1.0, 3600.0, random.Random(7)) for a in range(1, 10)]

    assert first == second


def test_delays_are_jittered_not_constant() -> None:
    rng = random.Random(3)

    delays = {retry_delay(5, 1.0, 3600.0, rng) for _ in range(20)}

    assert len(delays) > 1


def test_first_retry_is_between_half_base_and_base() -> None:
    rng = random.Random(11)

    delays = [retry_delay(1, 4.0, 3600.0, rng) for _ in range(200)]

    assert all(2.0 <= d <= 4.0 for d in delays)


def test_delay_grows_with_attempt() -> None:
    # Compare the same random draw across attempts: the delay doubles each time.
    draws = [retry_delay(attempt, 1.0, 1e9, random.Random(5)) for attempt in range(1, 20)]

    for earlier, later in pairwise(draws):
        assert later == pytest.approx(2 * earlier)
    assert draws == sorted(draws)


def test_worst_delay_of_an_attempt_is_at_least_the_best_of_the_previous_one() -> None:
    # Ranges [c/2, c] and [c, 2c] touch, so even with jitter a later attempt never waits less.
    rng = random.Random(9)
    for attempt in range(1, 15):
        this = [retry_delay(attempt, 1.0, 1e9, rng) for _ in range(100)]
        after = [retry_delay(attempt + 1, 1.0, 1e9, rng) for _ in range(100)]
        assert min(after) >= max(this)


@pytest.mark.parametrize("attempt", [7, 10, 50, 1000])
def test_delay_is_capped(attempt: int) -> None:
    rng = random.Random(1)

    delays = [retry_delay(attempt, 1.0, 60.0, rng) for _ in range(200)]

    assert all(30.0 <= d <= 60.0 for d in delays)
    assert max(delays) > 55.0  # the cap is reached, not some lower value


@pytest.mark.parametrize("attempt", [10**6, 2**62, sys.maxsize, 10**100])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    rng = random.Random(2)

    delay = retry_delay(attempt, 1.0, 3600.0, rng)

    assert math.isfinite(delay)
    assert 1800.0 <= delay <= 3600.0


def test_huge_attempt_with_large_base_stays_at_the_cap() -> None:
    delay = retry_delay(10**9, 1e300, 86400.0, random.Random(4))

    assert math.isfinite(delay)
    assert 43200.0 <= delay <= 86400.0


@pytest.mark.parametrize("attempt", [0, -1, -(10**9)])
def test_attempt_below_one_is_treated_as_the_first(attempt: int) -> None:
    rng = random.Random(6)

    delay = retry_delay(attempt, 8.0, 3600.0, rng)

    assert 4.0 <= delay <= 8.0


def test_without_rng_uses_the_global_random() -> None:
    state = random.getstate()
    try:
        random.seed(123)
        first = retry_delay(3, 1.0, 100.0)
        random.seed(123)
        second = retry_delay(3, 1.0, 100.0)
    finally:
        random.setstate(state)

    assert first == second
    assert 2.0 <= first <= 4.0
