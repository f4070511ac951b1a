"""The commands that run nodes or prepare the database for them: `serve`, `worker`,
`migrate`.

They work on the service, the engine with the workspace platform (`service.py`): `serve` and
`worker` run its node, as `make run` does, and `migrate` brings both migration lines up to
date. `serve` takes its port, then checks the database, before anything starts: a refusal
leaves no node row and no open connection behind.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from jobyard.cli import service
from jobyard.cli.context import check_reachable, load_config, opened_store, redact, setup_logging
from jobyard.cli.errors import cli_errors
from jobyard.config import Config
from jobyard.node import run_node


def _dashboard_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


@cli_errors
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on (default JOBYARD_HOST or 127.0.0.1). Beyond loopback "
            "it needs JOBYARD_API_TOKEN."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port (default JOBYARD_PORT or 8000)."),
    ] = None,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker",
            help="Serve the API and dashboard only; leave the jobs to `jobyard worker` nodes.",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API and the live dashboard, with a worker node in the same process.

    Runs until SIGINT or SIGTERM, then drains the node and exits 0. Set JOBYARD_API_TOKEN to
    require `Authorization: Bearer <token>` (and to listen beyond loopback). A port already in
    use is refused before anything starts (exit 2).
    """
    from jobyard.api import server as api_server
    from jobyard.api.settings import ServerSettings

    config = load_config(ctx)
    given: dict[str, object] = {}
    if host is not None:
        given["host"] = host
    if port is not None:
        given["port"] = port
    settings = ServerSettings.load(**given)
    settings.check_exposure()  # before anything is printed or opened
    # Then the port, before the database is touched or a node joins: bound now, it stays ours.
    listeners = api_server.bind(settings.host, settings.port)
    try:
        asyncio.run(check_reachable(config.database_url))
        setup_logging()
        bound = listeners[0].getsockname()[1]
        # Flushed at once: under a process manager stdout is a pipe, and the URL must show now.
        print(f"jobyard dashboard: {_dashboard_url(settings.host, bound)}", flush=True)
        api_server.serve(config, settings, run_worker=not no_worker, sockets=listeners)
    finally:
        for sock in listeners:
            sock.close()


@cli_errors
def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, help="Most jobs this node runs at once (default JOBYARD_CONCURRENCY or 16)."
        ),
    ] = None,
) -> None:
    """Run a worker node (no HTTP server) until SIGTERM or SIGINT, then drain it.

    Draining stops claiming, gives running jobs JOBYARD_SHUTDOWN_GRACE_PERIOD to finish, hands
    the rest back to pending, resigns leadership and exits 0. Start as many as you like on
    PostgreSQL; on SQLite they must share one host.
    """
    config = load_config(ctx, **({"concurrency": concurrency} if concurrency is not None else {}))
    setup_logging()
    asyncio.run(_work(config))


async def _work(config: Config) -> None:
    await check_reachable(config.database_url)
    runtime = service.build_runtime(config)
    try:
        dispatcher = runtime.dispatcher
        typer.echo(
            f"jobyard worker {dispatcher.node_id} on {redact(config.database_url)}: "
            f"{', '.join(dispatcher.job_types)}, concurrency {config.concurrency} "
            "(SIGTERM or Ctrl-C drains and stops)",
            err=True,
        )
        await run_node(dispatcher)
    finally:
        await runtime.close()


@cli_errors
def migrate(ctx: typer.Context) -> None:
    """Create the schema, or upgrade it to this version's; safe to run again or concurrently.

    Nodes and commands also migrate on first use; run this to do it at a time you choose.
    """
    config = load_config(ctx)
    version, platform = asyncio.run(_migrate(config))
    typer.echo(
        f"{redact(config.database_url)}: schema version {version}, "
        f"workspaces schema version {platform}"
    )


async def _migrate(config: Config) -> tuple[int, int]:
    """The engine's tables, then the workspace platform's (each its own migration line)."""
    async with opened_store(config, auto_migrate=False) as store:
        return await service.migrate(store)
