"""Limits: how many jobs of each type may run at once, across the whole cluster.

`Limits()` is the seed's `NewLimits()`. The dispatcher does not count against these in memory: it
passes them to the store's claim, which counts running jobs in the database under a per-type lock,
so the limit holds for every node together.
"""

from __future__ import annotations

from collections.abc import Mapping

from jobyard.model import ConfigError
from jobyard.workspaces.payloads import JOB_TYPE_SESSION_INIT, JOB_TYPE_WORKSPACE_INIT

__all__ = ["SEED_LIMITS", "Limits"]

SEED_LIMITS: Mapping[str, int] = {JOB_TYPE_WORKSPACE_INIT: 5, JOB_TYPE_SESSION_INIT: 10}


class Limits:
    """Per-type cluster-wide concurrency limits.

    `Limits()` gives the seed's limits (`workspace_init` 5, `session_init` 10).
    `Limits({"email": 3})` adds or overrides types on top of those. A type that is not named gets
    `default`, which is `None` (no cluster-wide limit; only each node's `concurrency` bounds it)
    unless you give a number.
    """

    __slots__ = ("_default", "_limits")

    def __init__(self, limits: Mapping[str, int] | None = None, *, default: int | None = None):
        merged = dict(SEED_LIMITS)
        merged.update(limits or {})
        for job_type, limit in merged.items():
            _check(f"limit for {job_type!r}", limit)
        if default is not None:
            _check("default limit", default)
        self._limits = merged
        self._default = default

    @property
    def limits(self) -> Mapping[str, int]:
        """The explicitly named limits (the seed's `Limits.Limits` map)."""
        return dict(self._limits)

    @property
    def default(self) -> int | None:
        return self._default

    def limit_for(self, job_type: str) -> int | None:
        """The cluster-wide limit for `job_type`, or None when it has none."""
        return self._limits.get(job_type, self._default)

    def __repr__(self) -> str:
        return f"Limits({self._limits!r}, default={self._default!r})"


def _check(what: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} must be an integer of at least 1, got {value!r}")
