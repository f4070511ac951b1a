"""How a command fails: one `error: <what went wrong>` line on stderr and a documented exit
code, never a traceback (unless JOBYARD_DEBUG is set).

Exit code 2 means the input was refused (a bad setting, option, payload or job type) and
nothing was written; 1 means the operation itself failed; 130 an interrupt.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

import typer

from jobyard.cli.output import one_line, printable
from jobyard.model import ConfigError, JobyardError, PayloadError, UnknownJobType

P = ParamSpec("P")
R = TypeVar("R")


EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


class CliError(Exception):
    """A failure the CLI itself detected (bad JSON, a failed job, a timeout), with its exit
    code, so it is reported like the library's own errors."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _describe(exc: Exception) -> tuple[str, int]:
    """The one-line message and exit code for `exc`."""
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, ConfigError | UnknownJobType | PayloadError):
        return str(exc), EXIT_USAGE  # refused before anything was written
    if isinstance(exc, JobyardError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, OSError):
        return str(exc), EXIT_FAILED
    return (
        f"unexpected {type(exc).__name__}: {exc} (set JOBYARD_DEBUG=1 for a traceback)",
        EXIT_FAILED,
    )


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn any error escaping a command into one `error:` line on stderr and an exit code.

    Typer's own exits and usage errors pass through untouched. With `JOBYARD_DEBUG` set the
    error is re-raised, traceback and all, for bug reports.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # Typer reports these itself
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if os.environ.get("JOBYARD_DEBUG"):
                raise
            message, code = _describe(exc)
            typer.echo(f"error: {printable(one_line(message))}", err=True)
            raise typer.Exit(code) from None

    return wrapper
