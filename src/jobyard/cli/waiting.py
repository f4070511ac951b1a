"""`--wait`, `--run` and `--timeout`: waiting until a job, or what its job builds, is done,
optionally working it in this process with a temporary worker node.

The loop is the same for every command that waits: it polls through `JobAdmin`, and a `Settle`
step says when what is waited for is done. By default that is the job itself; the platform
passes its own, since a workspace is done when it is ready, not when its job completes. A wait
ends in one of three ways: done (the command goes on), failed (CliError with the reason), or
out of time (CliError with the last state seen and, when no live node serves the job's type,
why it never started). A temporary node has drained before the command returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Final

import typer
from rich.console import Console

from jobyard.admin import JobAdmin
from jobyard.cli.errors import CliError
from jobyard.cli.output import escaped, one_line, progress
from jobyard.model import Job, JobNotFound, JobStatus
from jobyard.runtime import Runtime

POLL_SECONDS: Final = 0.2
NO_WORKER_HINT: Final = "no worker is running: start `jobyard worker` or `jobyard serve`"


WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait", "-w", help="Wait until it is done; exit 1 with the reason if it failed."
    ),
]
RunOption = Annotated[
    bool,
    typer.Option(
        "--run",
        help="Work the job in this process while waiting (a temporary worker node; implies "
        "--wait). For a quick start with no worker running.",
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout", min=0.0, metavar="SECONDS", help="Give up waiting after this long (exit 1)."
    ),
]


@dataclasses.dataclass(frozen=True, slots=True)
class WaitPlan:
    """What `--wait`, `--run` and `--timeout` asked for."""

    wait: bool
    run: bool
    seconds: float

    @property
    def waits(self) -> bool:
        return self.wait or self.run  # working a job in-process is pointless without waiting


@dataclasses.dataclass(frozen=True, slots=True)
class Settled:
    """What one poll found: whether the wait is over, why it failed (None if it did not), and
    the state to show while waiting."""

    done: bool
    failure: str | None
    state: str


Settle = Callable[[Job | None], Awaitable[Settled]]
"""Reads whether what is waited for has settled, given its job as this poll read it (None
once the job is gone). A front end waiting for something its job builds (a workspace) passes
its own; by default the job itself is what is waited for."""


def job_state(job: Job) -> str:
    """The job's state in a few words, for a front end's own progress lines."""
    return f"job {job.id} {job.status.value}, attempt {job.attempt}/{job.max_attempts}"


def job_settled(label: str, job: Job | None) -> Settled:
    """A job is done when it is completed, and has failed once it is failed or cancelled: a
    failed attempt with attempts left is back to pending, not failed."""
    if job is None:
        raise JobNotFound(f"{label} no longer exists")
    if job.status is JobStatus.COMPLETED:
        return Settled(True, None, "completed")
    if job.status is JobStatus.FAILED:
        return Settled(True, job.error or "no reason recorded", "failed")
    if job.status is JobStatus.CANCELLED:
        return Settled(True, "it was cancelled", "cancelled")
    state = f"{job.status.value}, attempt {job.attempt}/{job.max_attempts}"
    if job.error:
        state += f", last error: {job.error}"
    return Settled(False, None, state)


async def wait_for(
    admin: JobAdmin,
    console: Console,
    *,
    label: str,
    job_id: int,
    job_type: str,
    seconds: float,
    settle: Settle | None = None,
    node: asyncio.Task[None] | None = None,
) -> None:
    """Poll through `admin` until `label` settles: what `settle` reads, else the job itself.

    Raises CliError with the reason when it failed, or when `seconds` pass first. Without
    an in-process `node`, says so once when no live node serves the job's type, since the
    wait could then only end in a timeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    hinted = node is not None
    with progress(console, f"{label}: waiting") as show:
        while True:
            if node is not None and node.done():
                crash = None if node.cancelled() else node.exception()
                raise CliError(
                    f"the in-process worker stopped before {label} was done"
                    + (f": {crash}" if crash else "")
                )
            job = await admin.get_job(job_id)
            seen = await settle(job) if settle is not None else job_settled(label, job)
            if seen.done:
                if seen.failure is not None:
                    raise CliError(f"{label} failed: {seen.failure}")
                return
            show(f"{label}: {seen.state}")
            unserved = False
            if not hinted or loop.time() >= deadline:
                unserved = job_type in (await admin.cluster_status()).unserved
            if not hinted:
                hinted = True
                if unserved:
                    console.print(
                        f"hint: {NO_WORKER_HINT}, or pass --run to work it in this process",
                        style="yellow",
                    )
            if loop.time() >= deadline:
                message = f"{label} is not done after {seconds:g}s: {seen.state}"
                if unserved:
                    message += f"; {NO_WORKER_HINT}, or pass --run"
                raise CliError(message)
            await asyncio.sleep(POLL_SECONDS)


@contextlib.asynccontextmanager
async def temporary_node(
    runtime: Runtime, console: Console, enabled: bool
) -> AsyncIterator[asyncio.Task[None] | None]:
    """With `--run`: this process is a worker node while the command waits, then drains.

    It is a full node for that time (it may also run other pending jobs of its types), so
    `workspaces create demo --run` works on a fresh database with nothing else running.
    """
    if not enabled:
        yield None
        return
    logger = logging.getLogger("jobyard")
    handler = _ConsoleLogHandler(console)
    logger.addHandler(handler)
    task = asyncio.create_task(runtime.dispatcher.start(), name="jobyard-cli-node")
    try:
        yield task
    finally:
        try:
            await runtime.dispatcher.stop()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            logger.removeHandler(handler)


class _ConsoleLogHandler(logging.Handler):
    """While `--run` works jobs in-process, show the node's warnings (a failed attempt, a
    retry) above the spinner, one line each and without tracebacks."""

    def __init__(self, console: Console) -> None:
        super().__init__(level=logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = one_line(record.getMessage())
            self.console.print(f"worker: {escaped(message)}", style="dim")
        except Exception:
            self.handleError(record)
