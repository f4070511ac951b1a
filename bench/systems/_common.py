"""Plumbing shared by the per-system benchmark CLIs.

Standard library only: the same file is imported by jobyard's adapter (run with the main
.venv) and by the peers' adapters (run with bench/.venv-peers).

Every adapter speaks the same small protocol to bench/run.py:

- one-shot commands (`setup`, `enqueue-bulk`, `enqueue-single`, `produce`, `explain-claim`,
  `versions`) print one JSON object on stdout and exit;
- `worker` prints `READY <time.time()>` once its own setup is done, just before it enters the
  system's run loop, then runs until SIGTERM or SIGINT, stops the way the system recommends and
  writes a JSON report (start times of every job body it ran, peak RSS) to `--out`.

The job body is the same everywhere: it appends `(time.time(), <payload reference>)` to a list
and returns. Payloads are `{"i": <index>}`; the index is decoded only after the run, so the body
does nothing but take the timestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

JOB_TYPE = "bench"  # job type / entrypoint / task name in every system
DEFAULT_BATCH = 1000  # jobs per bulk-enqueue call


def configure_logging() -> None:
    """Warnings and errors to stderr with their level, so the orchestrator can spot them."""
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def emit(obj: dict[str, Any]) -> None:
    """Print the command's JSON result (the only thing on stdout, apart from READY)."""
    print(json.dumps(obj), flush=True)


def announce_ready(t_start: float) -> None:
    print(f"READY {t_start!r}", flush=True)


def payload_for(i: int) -> dict[str, int]:
    return {"i": i}


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now_mb() -> float:
    """This process's resident set size now (VmRSS), or 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def recorded_mb(starts: Sequence[tuple[float, Any]]) -> float:
    """About how much memory the benchmark's own record of start times holds: the list, its
    tuples and floats, and the payload objects it keeps alive. Part of the peak RSS, but the
    benchmark's, not the system's."""
    total = sys.getsizeof(starts)
    for t, ref in starts:
        total += sys.getsizeof((t, ref)) + sys.getsizeof(t) + sys.getsizeof(ref)
        if isinstance(ref, dict):
            total += sum(sys.getsizeof(v) for v in ref.values())
    return total / 2**20


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for a graceful stop driven by the orchestrator."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


def write_worker_report(
    path: str,
    *,
    t_start: float,
    starts: Sequence[tuple[float, Any]],
    decode: Callable[[Any], int],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write what the job bodies recorded, with the payload references decoded to indexes."""
    report: dict[str, Any] = {
        "t_start": t_start,
        "executed": len(starts),
        "start_times": [t for t, _ in starts],
        "indexes": [decode(ref) for _, ref in starts],
        "peak_rss_mb": peak_rss_mb(),
        "recorded_mb": recorded_mb(starts),
    }
    if extra:
        report.update(extra)
    Path(path).write_text(json.dumps(report), encoding="utf-8")


def write_json(path: str, obj: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(obj), encoding="utf-8")


async def paced(n: int, rate: float, send: Callable[[int], Awaitable[None]]) -> list[float]:
    """Call `send(i)` for i in 0..n-1 at `rate` per second on a fixed schedule (no drift).

    Returns the host-clock time taken just before each call: the enqueue time of job i.
    """
    sent: list[float] = []
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(time.time())
        await send(i)
    return sent


def base_parser(description: str) -> tuple[argparse.ArgumentParser, Any]:
    """The subcommands every adapter implements, with their shared options."""
    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("versions", help="print the versions of the system and its driver")
    for name, helptext in (
        ("setup", "install the system's schema into a fresh database"),
        ("enqueue-bulk", "enqueue --n jobs with the bulk API, --batch per call"),
        ("enqueue-single", "enqueue --n jobs, one call and one transaction each"),
        ("produce", "enqueue --n jobs at --rate per second; write enqueue times to --out"),
        ("worker", "run one worker until SIGTERM; write start times to --out"),
        ("explain-claim", "EXPLAIN ANALYZE the system's claim (dequeue) query"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--dsn", required=True)
        p.add_argument("--n", type=int, default=0)
        p.add_argument("--batch", type=int, default=DEFAULT_BATCH)
        p.add_argument("--rate", type=float, default=100.0)
        p.add_argument("--concurrency", type=int, default=16)
        p.add_argument("--limit", type=int, default=0, help="cluster-wide limit (0: none)")
        p.add_argument("--repeat", type=int, default=5, help="explain-claim repetitions")
        p.add_argument("--out", default="")
    return parser, sub


def fail(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(2)
