"""Slowing down token guessing: a budget of wrong tokens per client address.

Each address may present `burst` wrong tokens (a bearer header or the sign-in form) and
regains one every `interval` seconds, up to `burst` again: a token bucket. While its budget is
spent, its token attempts are answered 429 with `Retry-After` *without comparing the token*, so
a guess made then says nothing, right or wrong. A right token costs nothing and is never
delayed; requests that present no token (health checks, a signed-in browser's cookie) are not
counted at all.

The buckets live in this process's memory: a restart forgets them, and several servers on one
database each keep their own. Their number is capped (`max_clients`), so a flood of addresses
cannot grow memory without bound; when the cap is reached, full buckets (addresses that have not
failed lately) are dropped first, then the oldest.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FailureBudget", "client_key"]


def client_key(host: str | None) -> str:
    """The bucket an address draws from. IPv6 clients are grouped by /64, the block one host or
    home network usually holds, so rotating addresses within it buys no extra guesses."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class FailureBudget:
    """Per-client budgets of wrong tokens; `clock` is injectable so tests can move time."""

    def __init__(
        self,
        burst: int,
        interval: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or interval <= 0 or max_clients < 1:
            raise ValueError("burst and max_clients must be at least 1, interval positive")
        self.burst = burst
        self.interval = interval
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _refilled(self, key: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) / self.interval)
        bucket.updated = now
        if bucket.tokens >= self.burst:
            del self._buckets[key]  # a full bucket is the same as none
            return None
        return bucket

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try a token again; 0 when it may now."""
        bucket = self._refilled(key, self.clock())
        if bucket is None or bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) * self.interval

    def retry_after_header(self, key: str) -> str:
        """`retry_after` as the whole seconds a `Retry-After` header holds, at least 1."""
        return str(max(1, math.ceil(self.retry_after(key))))

    def failed(self, key: str) -> None:
        """Spend one of `key`'s wrong tokens."""
        now = self.clock()
        bucket = self._refilled(key, now)
        if bucket is None:
            self._make_room()
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def _make_room(self) -> None:
        if len(self._buckets) < self.max_clients:
            return
        now = self.clock()
        for key in list(self._buckets):
            self._refilled(key, now)
        while len(self._buckets) >= self.max_clients:
            del self._buckets[next(iter(self._buckets))]  # the oldest first
