"""The `jobyard` command: the engine's commands and the workspace platform's groups on one
Typer app, listed by `jobyard --help` in the order they are added here."""

from __future__ import annotations

import typer

from jobyard.cli import jobs, nodes, status
from jobyard.cli.context import root
from jobyard.workspaces import cli as platform

__all__ = ["app"]

app = typer.Typer(
    name="jobyard",
    help="Durable background jobs on SQLite or PostgreSQL: run nodes, enqueue work, inspect it.",
    epilog="Exit codes: 0 done; 1 the operation failed (database unreachable, job or workspace "
    "failed, not found, timeout); 2 the input was refused and nothing was written.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.callback()(root)
app.command()(nodes.serve)
app.command()(nodes.worker)
app.command()(nodes.migrate)
app.command()(jobs.enqueue)
app.command()(status.status)
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(platform.workspaces_app, name="workspaces")
app.add_typer(platform.sessions_app, name="sessions")
