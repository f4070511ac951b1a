"""Retry delays: exponential backoff with jitter."""

from __future__ import annotations

import random

__all__ = ["retry_delay"]


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before the run after `attempt` (1 = the first run failed).

    The ceiling doubles with each attempt, `base * 2**(attempt-1)`, up to `cap`; the delay is
    drawn between half the ceiling and the ceiling, so jobs that failed together spread out
    instead of retrying in lock step, and no retry comes sooner than half the planned wait.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 1) - 1, 62))
    draw = rng.random() if rng is not None else random.random()
    return ceiling * (0.5 + draw / 2)
