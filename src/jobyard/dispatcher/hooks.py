"""Observers: a hook that any number of functions can watch.

A dispatcher's hooks (`on_job_start`, `on_job_end`, and leadership through `on_leadership`) are
watched by more than one party at once: the server's Prometheus metrics and an application's
own tracing or logging. Each adds its function and none replaces another's.

What is guaranteed: observers are called in the order they were added, each once per event.
An observer that raises is logged and skipped; the others still run, and the job, election
or node it observes is never affected. Adding or removing an observer while observers are
being called takes effect from the next event on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, ParamSpec

__all__ = ["Observers"]

P = ParamSpec("P")

log = logging.getLogger("jobyard.hooks")


class Observers(Generic[P]):
    """The functions watching one hook. `Observers[[Job]]` holds functions taking a job.

    Call it to notify every observer. Observers run on the caller's thread (for the
    dispatcher's hooks, the event loop), so they should be quick.
    """

    __slots__ = ("_fns", "_name")

    def __init__(self, name: str) -> None:
        self._name = name  # names the hook in the log when an observer raises
        # Replaced, never changed in place: a call in progress keeps the tuple it started with.
        self._fns: tuple[Callable[P, object], ...] = ()

    def add(self, fn: Callable[P, object]) -> Callable[P, object]:
        """Watch this hook with `fn`; returns `fn`, so it can be used as a decorator. Adding
        an observer that is already there does nothing: it is still called once per event."""
        if fn not in self._fns:
            self._fns = (*self._fns, fn)
        return fn

    def remove(self, fn: Callable[P, object]) -> None:
        """Stop calling `fn`. Raises ValueError if it was not added."""
        if fn not in self._fns:
            raise ValueError(f"{fn!r} is not an observer of {self._name}")
        self._fns = tuple(f for f in self._fns if f != fn)

    def clear(self) -> None:
        """Remove every observer."""
        self._fns = ()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for fn in self._fns:
            try:
                fn(*args, **kwargs)
            except Exception:
                log.exception("an observer of %s raised; ignored (%r)", self._name, fn)

    def __len__(self) -> int:
        return len(self._fns)

    def __repr__(self) -> str:
        return f"<Observers of {self._name}: {len(self._fns)}>"
