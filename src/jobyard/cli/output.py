"""How the CLI prints: the consoles, stored text made safe for a terminal, JSON, tables,
times, status colours and progress while waiting.

Every value that comes from the database passes through `printable` (or `escaped`, for rich
markup) before it reaches a terminal, so a stored name or error can neither break a table nor
send the terminal a command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

# Characters that would move the cursor, recolour the terminal or reorder the text if printed
# raw: the C0 and C1 controls, DEL, and Unicode's bidirectional marks and overrides.
_UNPRINTABLE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control character shown as its escape (`\\x1b`, `\\n`), so a stored
    name or error can neither break a table nor send the terminal a command."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def escaped(text: str) -> str:
    """Stored text for rich output: control characters escaped, then rich's markup."""
    return escape(printable(text))


def one_line(text: str) -> str:
    """Collapse a message (a database's may span several lines) so every error is one line."""
    return " ".join(text.split()) or "unknown error"


def stderr_console() -> Console:
    """Progress and hints go to stderr so stdout stays machine-readable."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    """Tables on stdout; when piped, wide enough that rich does not squeeze the columns."""
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=160 if wide else None)


def _plain(value: Any) -> Any:
    """Records as JSON-ready data: dataclasses to dicts, enums to values, times to ISO 8601."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(_plain(data), indent=2, ensure_ascii=False))


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


_STATUS_STYLE: Final = {
    "pending": "yellow",
    "processing": "cyan",
    "initializing": "cyan",
    "completed": "green",
    "ready": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def styled(status: Enum) -> str:
    value = str(status.value)
    return f"[{_STATUS_STYLE.get(value, 'white')}]{value}[/]"


def short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    text = one_line(text)
    return escaped(text if len(text) <= width else text[: width - 1] + "…")


def record_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    return table


@contextlib.contextmanager
def progress(console: Console, first: str) -> Iterator[Callable[[str], None]]:
    """A spinner on a terminal; elsewhere (CI logs, pipes) one line per change of state."""
    if console.is_terminal:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(escaped(first), total=None)
            yield lambda text: bar.update(task, description=escaped(text))
        return
    last: list[str] = []

    def show(text: str) -> None:
        if not last or last[-1] != text:
            console.print(escaped(text), style="dim")
            last.append(text)

    show(first)
    yield show


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
