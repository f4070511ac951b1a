"""The platform's commands, `jobyard workspaces create/show` and `jobyard sessions create/show`:
two Typer groups that `jobyard.cli` adds to the `jobyard` command.

They are built from the engine CLI's shared parts (output, errors, options, waiting), so they
print, fail and wait exactly as the engine's commands do. What only the platform knows stays
here: a workspace or session is done when it is *ready*, not when its job completes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer

from jobyard.admin import JobAdmin
from jobyard.cli.context import load_config, opened_runtime, opened_store
from jobyard.cli.errors import cli_errors
from jobyard.cli.output import (
    JsonOption,
    echo_json,
    escaped,
    record_table,
    stderr_console,
    stdout_console,
    styled,
    when,
)
from jobyard.cli.waiting import (
    RunOption,
    Settle,
    Settled,
    TimeoutOption,
    WaitOption,
    WaitPlan,
    job_state,
    temporary_node,
    wait_for,
)
from jobyard.config import Config
from jobyard.model import Job, NotFound
from jobyard.workspaces.entities import EntityStatus, Session, Workspace
from jobyard.workspaces.paths import session_dir, workspace_dir
from jobyard.workspaces.store import open_workspace_store

workspaces_app = typer.Typer(help="Create and inspect workspaces.", no_args_is_help=True)
sessions_app = typer.Typer(help="Create and inspect sessions.", no_args_is_help=True)


def _entity_rows(entity: Workspace | Session) -> list[tuple[str, str]]:
    rows = [("id", entity.id)]
    if isinstance(entity, Workspace):
        rows += [("name", escaped(entity.name)), ("template", escaped(entity.template or "-"))]
    else:
        rows.append(("workspace", entity.workspace_id))
    rows += [
        ("status", styled(entity.status)),
        ("job", str(entity.job_id) if entity.job_id is not None else "-"),
        ("created", when(entity.created_at)),
        ("updated", when(entity.updated_at)),
        ("error", escaped(entity.error or "-")),
    ]
    return rows


def _entity_settled(label: str, job: Job | None, entity: Workspace | Session | None) -> Settled:
    """An entity is done when it is ready. It has failed only once its job is final too: a
    `failed` workspace whose job still has attempts left may yet be built by the retry."""
    if entity is None:
        raise NotFound(f"{label} no longer exists")
    if entity.status is EntityStatus.READY:
        return Settled(True, None, "ready")
    if job is None or job.status.is_final:
        if entity.status is EntityStatus.FAILED:
            return Settled(True, entity.error or "no reason recorded", "failed")
        if job is None:
            return Settled(True, "its job no longer exists", entity.status.value)
        return Settled(
            True, job.error or f"its job {job.id} is {job.status.value}", job.status.value
        )
    if entity.status is EntityStatus.FAILED:
        return Settled(False, None, f"failed, will retry ({job_state(job)}): {entity.error}")
    return Settled(False, None, f"{entity.status.value} ({job_state(job)})")


def _settle_entity(label: str, read: Callable[[], Awaitable[Workspace | Session | None]]) -> Settle:
    """The wait's settle step for an entity: read it after its job, then judge both."""

    async def settle(job: Job | None) -> Settled:
        return _entity_settled(label, job, await read())

    return settle


@workspaces_app.command("create")
@cli_errors
def workspaces_create(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="1-64 letters, digits, '.', '_' or '-'; also its folder name.")
    ],
    template: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="A folder or git repository inside the templates folder "
            "(JOBYARD_TEMPLATES_DIR, default <data dir>/templates) to build it from.",
        ),
    ] = None,
    wait: WaitOption = False,
    run: RunOption = False,
    timeout: TimeoutOption = 120.0,
    as_json: JsonOption = False,
) -> None:
    """Create a workspace and enqueue its workspace_init job, in one transaction; print its id.

    A worker then builds it under JOBYARD_DATA_DIR (default ./jobyard-data).
    """
    config = load_config(ctx)
    workspace, job = asyncio.run(
        _create_workspace(config, name, template, WaitPlan(wait, run, timeout))
    )
    if as_json:
        echo_json({"workspace": workspace, "job": job})
    else:
        typer.echo(workspace.id)


async def _create_workspace(
    config: Config, name: str, template: str | None, plan: WaitPlan
) -> tuple[Workspace, Job]:
    console = stderr_console()
    async with opened_runtime(config) as runtime:
        workspace, job = await runtime.workspaces.create(name, template)
        if not plan.waits:
            return workspace, job
        label = f"workspace {workspace.id}"
        async with temporary_node(runtime, console, plan.run) as node:
            await wait_for(
                runtime.admin,
                console,
                label=label,
                job_id=job.id,
                job_type=job.type,
                seconds=plan.seconds,
                settle=_settle_entity(
                    label, lambda: runtime.workspace_store.get_workspace(workspace.id)
                ),
                node=node,
            )
        console.print(
            f"{label} ready in {escaped(str(workspace_dir(config.data_dir, workspace.id)))}"
        )
        latest = await runtime.workspace_store.get_workspace(workspace.id)
        return latest or workspace, await _latest_job(runtime.admin, job)


@sessions_app.command("create")
@cli_errors
def sessions_create(
    ctx: typer.Context,
    workspace_id: Annotated[str, typer.Argument(help="The workspace the session belongs to.")],
    wait: WaitOption = False,
    run: RunOption = False,
    timeout: TimeoutOption = 120.0,
    as_json: JsonOption = False,
) -> None:
    """Create a session of a workspace and enqueue its session_init job; print its id.

    The session is initialized once its workspace is ready. A missing workspace is refused
    and nothing is stored.
    """
    config = load_config(ctx)
    session, job = asyncio.run(_create_session(config, workspace_id, WaitPlan(wait, run, timeout)))
    if as_json:
        echo_json({"session": session, "job": job})
    else:
        typer.echo(session.id)


async def _create_session(config: Config, workspace_id: str, plan: WaitPlan) -> tuple[Session, Job]:
    console = stderr_console()
    async with opened_runtime(config) as runtime:
        session, job = await runtime.sessions.create(workspace_id)
        if not plan.waits:
            return session, job
        label = f"session {session.id}"
        async with temporary_node(runtime, console, plan.run) as node:
            await wait_for(
                runtime.admin,
                console,
                label=label,
                job_id=job.id,
                job_type=job.type,
                seconds=plan.seconds,
                settle=_settle_entity(
                    label, lambda: runtime.workspace_store.get_session(session.id)
                ),
                node=node,
            )
        folder = session_dir(config.data_dir, session.workspace_id, session.id)
        console.print(f"{label} ready in {escaped(str(folder))}")
        latest = await runtime.workspace_store.get_session(session.id)
        return latest or session, await _latest_job(runtime.admin, job)


async def _latest_job(admin: JobAdmin, job: Job) -> Job:
    """The job as it is now, for the JSON printed after a wait."""
    latest = await admin.get_job(job.id)
    return latest if latest is not None else job


async def _get_entity(config: Config, kind: str, entity_id: str) -> Workspace | Session:
    async with opened_store(config) as store:
        entities = open_workspace_store(store)
        found: Workspace | Session | None = (
            await entities.get_workspace(entity_id)
            if kind == "workspace"
            else await entities.get_session(entity_id)
        )
    if found is None:
        raise NotFound(f"{kind} {entity_id!r} does not exist")
    return found


@workspaces_app.command("show")
@cli_errors
def workspaces_show(
    ctx: typer.Context,
    workspace_id: Annotated[str, typer.Argument(help="The workspace's id (ws_...).")],
    as_json: JsonOption = False,
) -> None:
    """Show one workspace: its status, its init job and, if it failed, why."""
    found = asyncio.run(_get_entity(load_config(ctx), "workspace", workspace_id))
    if as_json:
        echo_json(found)
    else:
        stdout_console().print(record_table(f"workspace {found.id}", _entity_rows(found)))


@sessions_app.command("show")
@cli_errors
def sessions_show(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session's id (se_...).")],
    as_json: JsonOption = False,
) -> None:
    """Show one session: its workspace, status, init job and, if it failed, why."""
    found = asyncio.run(_get_entity(load_config(ctx), "session", session_id))
    if as_json:
        echo_json(found)
    else:
        stdout_console().print(record_table(f"session {found.id}", _entity_rows(found)))
