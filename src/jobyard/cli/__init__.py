"""The `jobyard` command line: run nodes, enqueue work and look at the cluster.

Every command opens the store that `--database-url` (or `JOBYARD_DATABASE_URL`) names, does
its work inside one `asyncio.run`, and closes the store again; the nodes it runs (`worker`,
`serve`, `--run`) drain on the way out, so a command leaves no connection or node row behind.

Output conventions, so the commands compose in shell scripts:

- stdout carries the result: an id, a table, or JSON with `--json`.
- stderr carries everything else: progress, hints and errors.
- An error is one line, `error: <what went wrong>`, never a traceback (set `JOBYARD_DEBUG=1` to
  get one). Exit code 2 means the input was refused (a bad setting, option, payload or job
  type) and nothing was written; 1 means the operation itself failed (a database that cannot
  be reached, a missing job, a job or workspace that failed, a timeout); 130 an interrupt.
"""

from __future__ import annotations

import typer

from jobyard.cli import jobs, nodes, status, workspaces
from jobyard.cli.context import root

__all__ = ["app", "main"]

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
app.add_typer(workspaces.workspaces_app, name="workspaces")
app.add_typer(workspaces.sessions_app, name="sessions")


def main() -> None:
    """The `jobyard` console script."""
    app()
