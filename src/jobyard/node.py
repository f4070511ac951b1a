"""Running a node as a process: signals in, graceful drain out.

`run_node(dispatcher)` runs the dispatcher until SIGTERM or SIGINT, then drains it: no new
claims, running jobs get the grace period, the rest go back to `pending`, leadership is
resigned and the node row removed, and the call returns so the process can exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from jobyard.dispatcher.dispatcher import Dispatcher

__all__ = ["run_node"]

log = logging.getLogger("jobyard.node")


async def run_node(
    dispatcher: Dispatcher,
    *,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Run `dispatcher` until one of `signals` arrives, then stop it gracefully."""
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(sig: signal.Signals) -> None:
        if stopping:
            log.info("received %s again; still draining", sig.name)
            return
        log.info("received %s: draining node %s", sig.name, dispatcher.node_id)
        stopping.append(loop.create_task(dispatcher.stop()))

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await dispatcher.start()
        if stopping:
            await stopping[0]
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
