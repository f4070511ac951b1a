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

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Final, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobyard import __version__
from jobyard.admin import JobAction, JobAdmin
from jobyard.config import DEFAULT_DATABASE_URL, Config
from jobyard.dispatcher.limits import Limits
from jobyard.model import (
    ConfigError,
    Job,
    JobNotFound,
    JobStatus,
    JobyardError,
    NotFound,
    PayloadError,
    StoreError,
    StoreUnavailable,
    UnknownJobType,
)
from jobyard.node import run_node
from jobyard.status import ClusterStatus, cluster_status
from jobyard.store import open_store
from jobyard.store.ports import Store
from jobyard.store.records import JobFilter
from jobyard.workspaces.entities import EntityStatus, Session, Workspace
from jobyard.workspaces.paths import session_dir, workspace_dir
from jobyard.workspaces.runtime import WORKSPACE_LIMITS
from jobyard.workspaces.runtime import WorkspaceRuntime as Runtime
from jobyard.workspaces.runtime import build_workspace_runtime as build_runtime
from jobyard.workspaces.store import open_workspace_store

__all__ = ["app", "main"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

POLL_SECONDS: Final = 0.2
MAX_PAGE: Final = 500
MAX_JOB_ID: Final = 2**63 - 1
NO_WORKER_HINT: Final = "no worker is running: start `jobyard worker` or `jobyard serve`"
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

app = typer.Typer(
    name="jobyard",
    help="Durable background jobs on SQLite or PostgreSQL: run nodes, enqueue work, inspect it.",
    epilog="Exit codes: 0 done; 1 the operation failed (database unreachable, job or workspace "
    "failed, not found, timeout); 2 the input was refused and nothing was written.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
jobs_app = typer.Typer(help="List, inspect, retry and cancel jobs.", no_args_is_help=True)
workspaces_app = typer.Typer(help="Create and inspect workspaces.", no_args_is_help=True)
sessions_app = typer.Typer(help="Create and inspect sessions.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(sessions_app, name="sessions")


# -- errors --------------------------------------------------------------------------------
class CliError(Exception):
    """A failure the CLI itself detected (bad JSON, a failed job, a timeout), with its exit
    code, so it is reported like the library's own errors."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# Characters that would move the cursor, recolour the terminal or reorder the text if printed
# raw: the C0 and C1 controls, DEL, and Unicode's bidirectional marks and overrides.
_UNPRINTABLE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _printable(text: str) -> str:
    """`text` with every control character shown as its escape (`\\x1b`, `\\n`), so a stored
    name or error can neither break a table nor send the terminal a command."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _text(text: str) -> str:
    """Stored text for rich output: control characters escaped, then rich's markup."""
    return escape(_printable(text))


def _one_line(text: str) -> str:
    """Collapse a message (psycopg's span several lines) so every error is one line."""
    return " ".join(text.split()) or "unknown error"


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


def _cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
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
            typer.echo(f"error: {_printable(_one_line(message))}", err=True)
            raise typer.Exit(code) from None

    return wrapper


# -- global options ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class _Globals:
    database_url: str | None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"jobyard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="JOBYARD_DATABASE_URL",
            show_envvar=True,
            metavar="URL",
            help=(
                "Where jobs live: sqlite:///path.db or postgresql://user@host:port/db "
                f"(default {DEFAULT_DATABASE_URL}). Other settings come from JOBYARD_* "
                "variables (JOBYARD_DATA_DIR, JOBYARD_JOB_TIMEOUT, ...)."
            ),
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    # A URL from the environment is left for Config to read, so its errors name the variable.
    source = ctx.get_parameter_source("database_url")
    from_env = source is not None and source.name == "ENVIRONMENT"
    ctx.obj = _Globals(database_url=None if from_env else database_url)


def _config(ctx: typer.Context, **overrides: Any) -> Config:
    """The Config for this invocation: JOBYARD_* variables, then `--database-url`, then the
    command's own options (each only when given, so the environment still applies)."""
    options = ctx.obj if isinstance(ctx.obj, _Globals) else _Globals(database_url=None)
    if options.database_url is not None:
        overrides = {"database_url": options.database_url, **overrides}
    return Config.from_env(**overrides)


# -- plumbing ------------------------------------------------------------------------------
def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _stderr() -> Console:
    """Progress and hints go to stderr so stdout stays machine-readable."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    """Tables on stdout; when piped, wide enough that rich does not squeeze the columns."""
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=160 if wide else None)


def _redact(url: str) -> str:
    """`url` without its password, for printing."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        user = parts.username or ""
        port = f":{parts.port}" if parts.port is not None else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return url.split("@")[-1] if "@" in url else url


async def _preflight(url: str) -> None:
    """Fail fast, with the address in the message, when PostgreSQL cannot be reached.

    The stores open lazily and the PostgreSQL pool keeps retrying for 30 s before it gives up;
    one direct attempt with a short timeout turns a typo into an immediate clear error.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return
    store = open_store(url, auto_migrate=False)
    try:
        await store.check_reachable(within=5.0)
    except StoreUnavailable as exc:
        raise CliError(str(exc)) from None
    finally:
        await store.close()


@contextlib.contextmanager
def _naming_the_database(url: str) -> Iterator[None]:
    """Database errors name the database, since the driver's message often does not.

    On SQLite an OSError is the file or its folder being unusable (the store creates both).
    """
    try:
        yield
    except Exception as exc:
        if isinstance(exc, StoreError):
            raise CliError(f"database error on {_redact(url)}: {exc}") from exc
        if isinstance(exc, OSError) and url.startswith("sqlite://"):
            raise CliError(f"cannot use {url}: {exc}") from exc
        raise


@contextlib.asynccontextmanager
async def _opened_store(config: Config) -> AsyncIterator[Store]:
    await _preflight(config.database_url)
    store = open_store(config.database_url)
    with _naming_the_database(config.database_url):
        try:
            yield store
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def _opened_runtime(config: Config) -> AsyncIterator[Runtime]:
    await _preflight(config.database_url)
    runtime = build_runtime(config)
    with _naming_the_database(config.database_url):
        try:
            yield runtime
        finally:
            await runtime.close()


def _setup_logging() -> None:
    """Long-running commands (worker, serve) log what the node does to stderr."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class _ConsoleLogHandler(logging.Handler):
    """While `--run` works jobs in-process, show the node's warnings (a failed attempt, a
    retry) above the spinner, one line each and without tracebacks."""

    def __init__(self, console: Console) -> None:
        super().__init__(level=logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = _one_line(record.getMessage())
            self.console.print(f"worker: {_text(message)}", style="dim")
        except Exception:
            self.handleError(record)


# -- JSON and tables -----------------------------------------------------------------------
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


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(_plain(data), indent=2, ensure_ascii=False))


def _status_json(st: ClusterStatus) -> dict[str, Any]:
    """The same shape as the API's `GET /api/status`."""
    leader = None
    if st.leader is not None:
        leader = {
            "node_id": st.leader.leader_id,
            "elected_at": st.leader.elected_at,
            "expires_at": st.leader.expires_at,
        }
    return {
        "leader": leader,
        "nodes": [
            {
                "node_id": n.node_id,
                "hostname": n.hostname,
                "pid": n.pid,
                "job_types": list(n.job_types),
                "concurrency": n.concurrency,
                "started_at": n.started_at,
                "heartbeat_at": n.heartbeat_at,
                "expires_at": n.expires_at,
            }
            for n in st.nodes
        ],
        "types": [
            {
                "type": t.type,
                "counts": {s.value: t.counts.get(s, 0) for s in JobStatus},
                "pending": t.pending,
                "running": t.running,
                "limit": t.limit,
                "served": t.served,
            }
            for t in st.types
        ],
        "unserved": st.unserved,
    }


def _when(value: datetime | None) -> str:
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


def _styled(status: Enum) -> str:
    value = str(status.value)
    return f"[{_STATUS_STYLE.get(value, 'white')}]{value}[/]"


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    text = _one_line(text)
    return _text(text if len(text) <= width else text[: width - 1] + "…")


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
            _text(job.type),
            _styled(job.status),
            f"{job.attempt}/{job.max_attempts}",
            str(job.priority),
            _when(job.run_at),
            _short(job.error),
        )
    return table


def _record_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    return table


def _job_rows(job: Job) -> list[tuple[str, str]]:
    return [
        ("id", str(job.id)),
        ("type", _text(job.type)),
        ("status", _styled(job.status)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("priority", str(job.priority)),
        ("payload", _text(json.dumps(job.payload, ensure_ascii=False))),
        ("run at", _when(job.run_at)),
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("owner", _text(job.owner or "-")),
        ("error", _text(job.error or "-")),
    ]


def _entity_rows(entity: Workspace | Session) -> list[tuple[str, str]]:
    rows = [("id", entity.id)]
    if isinstance(entity, Workspace):
        rows += [("name", _text(entity.name)), ("template", _text(entity.template or "-"))]
    else:
        rows.append(("workspace", entity.workspace_id))
    rows += [
        ("status", _styled(entity.status)),
        ("job", str(entity.job_id) if entity.job_id is not None else "-"),
        ("created", _when(entity.created_at)),
        ("updated", _when(entity.updated_at)),
        ("error", _text(entity.error or "-")),
    ]
    return rows


# -- waiting -------------------------------------------------------------------------------
@contextlib.contextmanager
def _progress(console: Console, first: str) -> Iterator[Callable[[str], None]]:
    """A spinner on a terminal; elsewhere (CI logs, pipes) one line per change of state."""
    if console.is_terminal:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(_text(first), total=None)
            yield lambda text: progress.update(task, description=_text(text))
        return
    last: list[str] = []

    def show(text: str) -> None:
        if not last or last[-1] != text:
            console.print(_text(text), style="dim")
            last.append(text)

    show(first)
    yield show


@dataclasses.dataclass(frozen=True, slots=True)
class _WaitPlan:
    """What `--wait`, `--run` and `--timeout` asked for."""

    wait: bool
    run: bool
    seconds: float

    @property
    def waits(self) -> bool:
        return self.wait or self.run  # working a job in-process is pointless without waiting


EntityGetter = Callable[[], Awaitable[Workspace | Session | None]]


def _job_state(job: Job) -> str:
    return f"job {job.id} {job.status.value}, attempt {job.attempt}/{job.max_attempts}"


def _settled(
    label: str, job: Job | None, entity: Workspace | Session | None, has_entity: bool
) -> tuple[bool, str | None, str]:
    """(finished, failure reason or None, what to show while waiting) for one poll.

    An entity is done when it is ready. It has failed only once its job is final too: a
    `failed` workspace whose job still has attempts left may yet be built by the retry.
    """
    if has_entity:
        if entity is None:
            raise NotFound(f"{label} no longer exists")
        if entity.status is EntityStatus.READY:
            return True, None, "ready"
        if job is None or job.status.is_final:
            if entity.status is EntityStatus.FAILED:
                return True, entity.error or "no reason recorded", "failed"
            if job is None:
                return True, "its job no longer exists", entity.status.value
            return True, job.error or f"its job {job.id} is {job.status.value}", job.status.value
        if entity.status is EntityStatus.FAILED:
            return False, None, f"failed, will retry ({_job_state(job)}): {entity.error}"
        return False, None, f"{entity.status.value} ({_job_state(job)})"
    if job is None:
        raise JobNotFound(f"{label} no longer exists")
    if job.status is JobStatus.COMPLETED:
        return True, None, "completed"
    if job.status is JobStatus.FAILED:
        return True, job.error or "no reason recorded", "failed"
    if job.status is JobStatus.CANCELLED:
        return True, "it was cancelled", "cancelled"
    state = f"{job.status.value}, attempt {job.attempt}/{job.max_attempts}"
    if job.error:
        state += f", last error: {job.error}"
    return False, None, state


async def _wait(
    store: Store,
    console: Console,
    *,
    label: str,
    job_id: int,
    job_type: str,
    seconds: float,
    entity: EntityGetter | None = None,
    node: asyncio.Task[None] | None = None,
) -> None:
    """Poll the store until `label` (its entity if given, else its job) settles.

    Raises CliError with the reason when it failed, or when `seconds` pass first. Without
    an in-process `node`, says so once when no live node serves the job's type, since the
    wait could then only end in a timeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    hinted = node is not None
    with _progress(console, f"{label}: waiting") as show:
        while True:
            if node is not None and node.done():
                crash = None if node.cancelled() else node.exception()
                raise CliError(
                    f"the in-process worker stopped before {label} was done"
                    + (f": {crash}" if crash else "")
                )
            job = await store.get_job(job_id)
            current = await entity() if entity is not None else None
            done, failure, state = _settled(label, job, current, entity is not None)
            if done:
                if failure is not None:
                    raise CliError(f"{label} failed: {failure}")
                return
            show(f"{label}: {state}")
            unserved = False
            if not hinted or loop.time() >= deadline:
                unserved = job_type in (await cluster_status(store)).unserved
            if not hinted:
                hinted = True
                if unserved:
                    console.print(
                        f"hint: {NO_WORKER_HINT}, or pass --run to work it in this process",
                        style="yellow",
                    )
            if loop.time() >= deadline:
                message = f"{label} is not done after {seconds:g}s: {state}"
                if unserved:
                    message += f"; {NO_WORKER_HINT}, or pass --run"
                raise CliError(message)
            await asyncio.sleep(POLL_SECONDS)


@contextlib.asynccontextmanager
async def _temporary_node(
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


# -- options shared by several commands ----------------------------------------------------
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
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
JobIdArgument = Annotated[int, typer.Argument(min=1, max=MAX_JOB_ID, help="The job's id.")]


# -- commands: running nodes -----------------------------------------------------------------
def _dashboard_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


@app.command()
@_cli_errors
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

    config = _config(ctx)
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
        _run(_preflight(config.database_url))
        _setup_logging()
        bound = listeners[0].getsockname()[1]
        # Flushed at once: under a process manager stdout is a pipe, and the URL must show now.
        print(f"jobyard dashboard: {_dashboard_url(settings.host, bound)}", flush=True)
        api_server.serve(config, settings, run_worker=not no_worker, sockets=listeners)
    finally:
        for sock in listeners:
            sock.close()


@app.command()
@_cli_errors
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
    config = _config(ctx, **({"concurrency": concurrency} if concurrency is not None else {}))
    _setup_logging()
    _run(_work(config))


async def _work(config: Config) -> None:
    await _preflight(config.database_url)
    runtime = build_runtime(config)
    try:
        dispatcher = runtime.dispatcher
        typer.echo(
            f"jobyard worker {dispatcher.node_id} on {_redact(config.database_url)}: "
            f"{', '.join(dispatcher.job_types)}, concurrency {config.concurrency} "
            "(SIGTERM or Ctrl-C drains and stops)",
            err=True,
        )
        await run_node(dispatcher)
    finally:
        await runtime.close()


@app.command()
@_cli_errors
def migrate(ctx: typer.Context) -> None:
    """Create the schema, or upgrade it to this version's; safe to run again or concurrently.

    Nodes and commands also migrate on first use; run this to do it at a time you choose.
    """
    config = _config(ctx)
    version, platform = _run(_migrate(config))
    typer.echo(
        f"{_redact(config.database_url)}: schema version {version}, "
        f"workspaces schema version {platform}"
    )


async def _migrate(config: Config) -> tuple[int, int]:
    """The engine's tables, then the workspace platform's (each its own migration line)."""
    await _preflight(config.database_url)
    store = open_store(config.database_url, auto_migrate=False)
    with _naming_the_database(config.database_url):
        try:
            return await store.migrate(), await open_workspace_store(store).migrate()
        finally:
            await store.close()


# -- commands: jobs ------------------------------------------------------------------------
def _parse_payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--payload is not valid JSON: {exc}", EXIT_USAGE) from None


@app.command()
@_cli_errors
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
    config = _config(ctx)
    body = _parse_payload(payload)
    job = _run(
        _enqueue(
            config,
            job_type,
            body,
            priority=priority,
            max_attempts=max_attempts,
            run_in=run_in,
            plan=_WaitPlan(wait, run, timeout),
        )
    )
    if as_json:
        _echo_json(job)
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
    plan: _WaitPlan,
) -> Job:
    console = _stderr()
    async with _opened_runtime(config) as runtime:
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
        async with _temporary_node(runtime, console, plan.run) as node:
            await _wait(
                runtime.store,
                console,
                label=f"job {job.id}",
                job_id=job.id,
                job_type=job_type,
                seconds=plan.seconds,
                node=node,
            )
        final = await runtime.store.get_job(job.id)
        return final if final is not None else job


@jobs_app.command("list")
@_cli_errors
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
    config = _config(ctx)
    flt = JobFilter(status=status, type=job_type, limit=limit + 1, before_id=after)
    jobs = _run(_list_jobs(config, flt))
    page, more = jobs[:limit], len(jobs) > limit
    cursor = str(page[-1].id) if more else None
    if as_json:
        _echo_json({"jobs": page, "next": cursor})
        return
    out = _stdout()
    if not page:
        out.print("no jobs")
        return
    out.print(_jobs_table(page))
    if cursor is not None:
        out.print(f"more: jobyard jobs list --after {cursor}", style="dim")


async def _list_jobs(config: Config, flt: JobFilter) -> list[Job]:
    async with _opened_store(config) as store:
        return await store.list_jobs(flt)


async def _get_job(config: Config, job_id: int) -> Job:
    async with _opened_store(config) as store:
        job = await store.get_job(job_id)
    if job is None:
        raise JobNotFound(f"job {job_id} does not exist")
    return job


@jobs_app.command("show")
@_cli_errors
def jobs_show(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Show one job: its payload, attempts, times and last error."""
    job = _run(_get_job(_config(ctx), job_id))
    if as_json:
        _echo_json(job)
    else:
        _stdout().print(_record_table(f"job {job.id}", _job_rows(job)))


@jobs_app.command("retry")
@_cli_errors
def jobs_retry(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Put a failed or cancelled job back to pending, with a fresh set of attempts.

    Exits 1 when this call did not change the job: it was already pending, or running or
    completed.
    """
    _acted(_run(_job_action(_config(ctx), job_id, JobAdmin.retry_job)), as_json)


@jobs_app.command("cancel")
@_cli_errors
def jobs_cancel(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Cancel a pending job. A job already running is not interrupted.

    Exits 1 when this call did not change the job: it was already cancelled, or no longer
    pending.
    """
    _acted(_run(_job_action(_config(ctx), job_id, JobAdmin.cancel_job)), as_json)


async def _job_action(
    config: Config, job_id: int, act: Callable[[JobAdmin, int], Awaitable[JobAction]]
) -> JobAction:
    async with _opened_store(config) as store:
        return await act(JobAdmin(store), job_id)


def _acted(action: JobAction, as_json: bool) -> None:
    """Print what the action did; an action that changed nothing is an error (exit 1)."""
    if not action.changed:
        raise CliError(action.message)
    if as_json:
        _echo_json(action.job)
    else:
        typer.echo(action.message)


# -- commands: cluster status ----------------------------------------------------------------
@app.command()
@_cli_errors
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the leader, the live nodes and, per job type, counts, limit and who serves it.

    A type with pending jobs that no live node serves is flagged: those jobs wait until a node
    that has its executor starts.
    """
    st = _run(_status(_config(ctx)))
    if as_json:
        _echo_json(_status_json(st))
        return
    out = _stdout()
    if st.leader is None:
        out.print("leader: [yellow]none[/] (no node holds the lease)")
    else:
        out.print(
            f"leader: [bold]{_text(st.leader.leader_id)}[/], term since "
            f"{_when(st.leader.elected_at)}, lease until {_when(st.leader.expires_at)}"
        )
    if st.nodes:
        nodes = Table(title=f"live nodes ({len(st.nodes)})", title_justify="left")
        for column in ("node", "host", "pid", "types", "concurrency", "heartbeat"):
            nodes.add_column(column)
        for n in st.nodes:
            nodes.add_row(
                _text(n.node_id),
                _text(n.hostname),
                str(n.pid),
                _text(", ".join(n.job_types)),
                str(n.concurrency),
                _when(n.heartbeat_at),
            )
        out.print(nodes)
    else:
        out.print(f"live nodes: [yellow]none[/] ({NO_WORKER_HINT})")
    types = Table(title="job types", title_justify="left")
    types.add_column("type")
    for s in JobStatus:
        types.add_column(s.value, justify="right")
    types.add_column("limit", justify="right")
    types.add_column("served")
    for t in st.types:
        served = "yes" if t.served else ("[red]no[/]" if t.pending else "no")
        types.add_row(
            _text(t.type),
            *(str(t.counts.get(s, 0)) for s in JobStatus),
            str(t.limit) if t.limit is not None else "-",
            served,
        )
    out.print(types)
    if st.unserved:
        out.print(
            f"[yellow]pending jobs of {_text(', '.join(st.unserved))} wait: no live node "
            "serves them[/]"
        )


async def _status(config: Config) -> ClusterStatus:
    async with _opened_store(config) as store:
        return await cluster_status(store, Limits(WORKSPACE_LIMITS))


# -- commands: workspaces and sessions -------------------------------------------------------
@workspaces_app.command("create")
@_cli_errors
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
    config = _config(ctx)
    workspace, job = _run(_create_workspace(config, name, template, _WaitPlan(wait, run, timeout)))
    if as_json:
        _echo_json({"workspace": workspace, "job": job})
    else:
        typer.echo(workspace.id)


async def _create_workspace(
    config: Config, name: str, template: str | None, plan: _WaitPlan
) -> tuple[Workspace, Job]:
    console = _stderr()
    async with _opened_runtime(config) as runtime:
        workspace, job = await runtime.workspaces.create(name, template)
        if not plan.waits:
            return workspace, job
        store = runtime.store
        label = f"workspace {workspace.id}"
        async with _temporary_node(runtime, console, plan.run) as node:
            await _wait(
                store,
                console,
                label=label,
                job_id=job.id,
                job_type=job.type,
                seconds=plan.seconds,
                entity=lambda: runtime.workspace_store.get_workspace(workspace.id),
                node=node,
            )
        console.print(
            f"{label} ready in {_text(str(workspace_dir(config.data_dir, workspace.id)))}"
        )
        latest = await runtime.workspace_store.get_workspace(workspace.id)
        return latest or workspace, await _latest_job(store, job)


@sessions_app.command("create")
@_cli_errors
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
    config = _config(ctx)
    session, job = _run(_create_session(config, workspace_id, _WaitPlan(wait, run, timeout)))
    if as_json:
        _echo_json({"session": session, "job": job})
    else:
        typer.echo(session.id)


async def _create_session(
    config: Config, workspace_id: str, plan: _WaitPlan
) -> tuple[Session, Job]:
    console = _stderr()
    async with _opened_runtime(config) as runtime:
        session, job = await runtime.sessions.create(workspace_id)
        if not plan.waits:
            return session, job
        store = runtime.store
        label = f"session {session.id}"
        async with _temporary_node(runtime, console, plan.run) as node:
            await _wait(
                store,
                console,
                label=label,
                job_id=job.id,
                job_type=job.type,
                seconds=plan.seconds,
                entity=lambda: runtime.workspace_store.get_session(session.id),
                node=node,
            )
        folder = session_dir(config.data_dir, session.workspace_id, session.id)
        console.print(f"{label} ready in {_text(str(folder))}")
        latest = await runtime.workspace_store.get_session(session.id)
        return latest or session, await _latest_job(store, job)


async def _latest_job(store: Store, job: Job) -> Job:
    """The job as it is now, for the JSON printed after a wait."""
    latest = await store.get_job(job.id)
    return latest if latest is not None else job


async def _get_entity(config: Config, kind: str, entity_id: str) -> Workspace | Session:
    async with _opened_store(config) as store:
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
@_cli_errors
def workspaces_show(
    ctx: typer.Context,
    workspace_id: Annotated[str, typer.Argument(help="The workspace's id (ws_...).")],
    as_json: JsonOption = False,
) -> None:
    """Show one workspace: its status, its init job and, if it failed, why."""
    found = _run(_get_entity(_config(ctx), "workspace", workspace_id))
    if as_json:
        _echo_json(found)
    else:
        _stdout().print(_record_table(f"workspace {found.id}", _entity_rows(found)))


@sessions_app.command("show")
@_cli_errors
def sessions_show(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session's id (se_...).")],
    as_json: JsonOption = False,
) -> None:
    """Show one session: its workspace, status, init job and, if it failed, why."""
    found = _run(_get_entity(_config(ctx), "session", session_id))
    if as_json:
        _echo_json(found)
    else:
        _stdout().print(_record_table(f"session {found.id}", _entity_rows(found)))


def main() -> None:
    """The `jobyard` console script."""
    app()
