"""Waiting on an event with a deadline, the one timing primitive every background loop uses."""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True if it was set.

    A timeout scope rather than `asyncio.wait_for`, which wraps the wait in a task of its own:
    the dispatch loop waits here once per cycle, thousands of times a second on a busy node.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
