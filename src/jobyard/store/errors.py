"""Driver errors become jobyard's own at the store seam, as httpx maps its transport errors.

Each backend names its driver's error classes and how to sort them; `translate_errors` wraps
every public method of the backend so that nothing above the store ever sees `sqlite3.Error`
or `psycopg.Error`, only `StoreError` (or `StoreUnavailable` for what may pass if retried), with
the driver's error kept as the cause for logs and debugging.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from jobyard.model import StoreError

__all__ = ["translate_errors"]

C = TypeVar("C", bound=type)


def translate_errors(
    driver_errors: tuple[type[BaseException], ...],
    translate: Callable[[BaseException], StoreError],
) -> Callable[[C], C]:
    """Class decorator: every public method of the class, its own and inherited, raises
    `translate(exc)` (chained to `exc`) instead of a driver error in `driver_errors`."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def translated_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except driver_errors as exc:
                    raise translate(exc) from exc

            return translated_async

        @functools.wraps(fn)
        def translated(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except driver_errors as exc:
                raise translate(exc) from exc

        return translated

    def decorate(cls: C) -> C:
        for name in dir(cls):
            if name.startswith("_"):
                continue
            attribute = inspect.getattr_static(cls, name)
            if inspect.isfunction(attribute):
                setattr(cls, name, wrap(attribute))
        return cls

    return decorate
