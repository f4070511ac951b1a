"""The job commands: `enqueue`, and `jobs list`, `show`, `retry` and `cancel`.

Reads and operators' actions go through `JobAdmin`, so `jobs retry` and `jobs cancel` change a
job exactly when the API and the dashboard would, and say so in the same words; a call that
changed nothing exits 1. `enqueue` runs the service's own queue, so an unknown type or a payload
its model refuses is refused (exit 2) before anything is written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, Final

import typer
from rich.table import Table

from jobyard.admin import MAX_JOB_ID, JobAction, JobAdmin
from jobyard.cli.context import load_config, opened_admin, opened_runtime
from jobyard.cli.errors import EXIT_USAGE, CliError, cli_errors
from jobyard.cli.output import (
    JsonOption,
    echo_json,
    escaped,
    record_table,
    short,
    stderr_console,
    stdout_console,
    styled,
    when,
)
from jobyard.cli.waiting import (
    RunOption,
    TimeoutOption,
    WaitOption,
    WaitPlan,
    temporary_node,
    wait_for,
)
from jobyard.config import Config
from jobyard.model import Job, JobNotFound, JobStatus, UnknownJobType
from jobyard.store.records import JobFilter

MAX_PAGE: Final = 500

jobs_app = typer.Typer(help="List, inspect, retry and cancel jobs.", no_args_is_help=True)

JobIdArgument = Annotated[int, typer.Argument(min=1, max=MAX_JOB_ID, help="The job's id.")]


def _jobs_table(jobs: list[Job]) -> Table:
    table = Table(title="jobs, newest first", title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("type")
    table.add_column("status")
    table.add_column("attempt", justify="right")
    table.add_column("priority", justify="right")
    table.add_column("run at")
    table.add_column("error", overflow="fold")
    for job in jobs:
        table.add_row(
            str(job.id),
            escaped(job.type),
            styled(job.status),
            f"{job.attempt}/{job.max_attempts}",
            str(job.priority),
            when(job.run_at),
            short(job.error),
        )
    return table


def _job_rows(job: Job) -> list[tuple[str, str]]:
    return [
        ("id", str(job.id)),
        ("type", escaped(job.type)),
        ("status", styled(job.status)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("priority", str(job.priority)),
        ("payload", escaped(json.dumps(job.payload, ensure_ascii=False))),
        ("run at", when(job.run_at)),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
        ("owner", escaped(job.owner or "-")),
        ("error", escaped(job.error or "-")),
    ]


def _parse_payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--payload is not valid JSON: {exc}", EXIT_USAGE) from None


@cli_errors
def enqueue(
    ctx: typer.Context,
    job_type: Annotated[
        str,
        typer.Argument(metavar="TYPE", help="A registered job type: workspace_init, session_init."),
    ],
    payload: Annotated[
        str | None,
        typer.Option(
            "--payload",
            "-p",
            metavar="JSON",
            help='The payload as JSON, e.g. \'{"workspaceId": "ws_1"}\'.',
        ),
    ] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    max_attempts: Annotated[
        int | None,
        typer.Option(
            min=1, max=1000, help="Attempts before it fails (default JOBYARD_MAX_ATTEMPTS or 3)."
        ),
    ] = None,
    run_in: Annotated[
        float | None,
        typer.Option(min=0.0, metavar="SECONDS", help="Run no sooner than this from now."),
    ] = None,
    wait: WaitOption = False,
    run: RunOption = False,
    timeout: TimeoutOption = 120.0,
    as_json: JsonOption = False,
) -> None:
    """Enqueue one job and print its id.

    The type and payload are checked before anything is written: an unknown type or a
    payload its model refuses exits 2 and stores nothing.
    """
    config = load_config(ctx)
    body = _parse_payload(payload)
    job = asyncio.run(
        _enqueue(
            config,
            job_type,
            body,
            priority=priority,
            max_attempts=max_attempts,
            run_in=run_in,
            plan=WaitPlan(wait, run, timeout),
        )
    )
    if as_json:
        echo_json(job)
    else:
        typer.echo(str(job.id))


async def _enqueue(
    config: Config,
    job_type: str,
    payload: Any,
    *,
    priority: int,
    max_attempts: int | None,
    run_in: float | None,
    plan: WaitPlan,
) -> Job:
    console = stderr_console()
    async with opened_runtime(config) as runtime:
        known = runtime.dispatcher.job_types
        if job_type not in known:
            raise UnknownJobType(f"unknown job type {job_type!r}; known types: {', '.join(known)}")
        job = await runtime.queue.enqueue(
            job_type,
            payload,
            priority=priority,
            max_attempts=max_attempts,
            run_at=timedelta(seconds=run_in) if run_in is not None else None,
        )
        if not plan.waits:
            return job
        async with temporary_node(runtime, console, plan.run) as node:
            await wait_for(
                runtime.admin,
                console,
                label=f"job {job.id}",
                job_id=job.id,
                job_type=job_type,
                seconds=plan.seconds,
                node=node,
            )
        final = await runtime.admin.get_job(job.id)
        return final if final is not None else job


@jobs_app.command("list")
@cli_errors
def jobs_list(
    ctx: typer.Context,
    status: Annotated[
        JobStatus | None,
        typer.Option("--status", "-s", case_sensitive=False, help="Only jobs in this state."),
    ] = None,
    job_type: Annotated[
        str | None, typer.Option("--type", "-t", metavar="TYPE", help="Only jobs of this type.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=MAX_PAGE, help="Jobs per page.")
    ] = 50,
    after: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_JOB_ID,
            metavar="CURSOR",
            help="Continue after a previous page: pass the `next` it printed.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first, a page at a time."""
    config = load_config(ctx)
    flt = JobFilter(status=status, type=job_type, limit=limit + 1, before_id=after)
    jobs = asyncio.run(_list_jobs(config, flt))
    page, more = jobs[:limit], len(jobs) > limit
    cursor = str(page[-1].id) if more else None
    if as_json:
        echo_json({"jobs": page, "next": cursor})
        return
    out = stdout_console()
    if not page:
        out.print("no jobs")
        return
    out.print(_jobs_table(page))
    if cursor is not None:
        out.print(f"more: jobyard jobs list --after {cursor}", style="dim")


async def _list_jobs(config: Config, flt: JobFilter) -> list[Job]:
    async with opened_admin(config) as admin:
        return await admin.list_jobs(flt)


async def _get_job(config: Config, job_id: int) -> Job:
    async with opened_admin(config) as admin:
        job = await admin.get_job(job_id)
    if job is None:
        raise JobNotFound(f"job {job_id} does not exist")
    return job


@jobs_app.command("show")
@cli_errors
def jobs_show(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Show one job: its payload, attempts, times and last error."""
    job = asyncio.run(_get_job(load_config(ctx), job_id))
    if as_json:
        echo_json(job)
    else:
        stdout_console().print(record_table(f"job {job.id}", _job_rows(job)))


@jobs_app.command("retry")
@cli_errors
def jobs_retry(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Put a failed or cancelled job back to pending, with a fresh set of attempts.

    Exits 1 when this call did not change the job: it was already pending, or running or
    completed.
    """
    _acted(asyncio.run(_job_action(load_config(ctx), job_id, JobAdmin.retry_job)), as_json)


@jobs_app.command("cancel")
@cli_errors
def jobs_cancel(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Cancel a pending job. A job already running is not interrupted.

    Exits 1 when this call did not change the job: it was already cancelled, or no longer
    pending.
    """
    _acted(asyncio.run(_job_action(load_config(ctx), job_id, JobAdmin.cancel_job)), as_json)


async def _job_action(
    config: Config, job_id: int, act: Callable[[JobAdmin, int], Awaitable[JobAction]]
) -> JobAction:
    async with opened_admin(config) as admin:
        return await act(admin, job_id)


def _acted(action: JobAction, as_json: bool) -> None:
    """Print what the action did; an action that changed nothing is an error (exit 1)."""
    if not action.changed:
        raise CliError(action.message)
    if as_json:
        echo_json(action.job)
    else:
        typer.echo(action.message)
