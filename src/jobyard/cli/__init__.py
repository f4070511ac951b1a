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

The app itself is assembled in `jobyard.cli.commands` and loaded when `app` or `main` is first
used, not when this package is imported: the platform's command groups
(`jobyard.workspaces.cli`) are built from this package's modules, so importing them here would
make `import jobyard.workspaces.cli` a circular import whenever it came first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

__all__ = ["app", "main"]


def main() -> None:
    """The `jobyard` console script."""
    from jobyard.cli.commands import app

    app()


def __getattr__(name: str) -> typer.Typer:
    """`jobyard.cli.app`, the Typer app (for `CliRunner` and embedding), assembled on first use."""
    if name == "app":
        from jobyard.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
