"""What one invocation works on: the global options, the Config they and the JOBYARD_*
variables give, and the store or runtime it opens (after a quick check that the database can be
reached), with database errors naming the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Final
from urllib.parse import urlsplit, urlunsplit

import typer

from jobyard import __version__
from jobyard.admin import JobAdmin
from jobyard.cli import service
from jobyard.cli.errors import CliError
from jobyard.cli.service import ServiceRuntime
from jobyard.config import DEFAULT_DATABASE_URL, Config
from jobyard.dispatcher.limits import Limits
from jobyard.model import StoreError, StoreUnavailable
from jobyard.store import open_store
from jobyard.store.ports import Store

# How long the quick check waits for the database: docs/cli.md promises that a server that
# cannot be reached is reported within 5 seconds.
REACHABLE_WITHIN: Final = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Globals:
    """The root command's options, handed on to the command through Typer's context."""

    database_url: str | None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"jobyard {__version__}")
        raise typer.Exit()


# The root command (Typer runs it before any command). No docstring: Typer would show it as the
# app's help.
def root(
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


def load_config(ctx: typer.Context, **overrides: Any) -> Config:
    """The Config for this invocation: JOBYARD_* variables, then `--database-url`, then the
    command's own options (each only when given, so the environment still applies)."""
    options = ctx.obj if isinstance(ctx.obj, _Globals) else _Globals(database_url=None)
    if options.database_url is not None:
        overrides = {"database_url": options.database_url, **overrides}
    return Config.from_env(**overrides)


def redact(url: str) -> str:
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


async def check_reachable(url: str) -> None:
    """Fail fast, with the address in the message, when the database cannot be reached.

    The stores open lazily and the PostgreSQL pool keeps retrying for 30 s before it gives up;
    one direct attempt with a short timeout turns a typo into an immediate clear error. The
    store knows whether it has anything to reach (a SQLite file has not: it is created on first
    use), so this asks it rather than reading the URL's scheme. The message is the store's own,
    which names the address and leaves out the password.
    """
    store = open_store(url, auto_migrate=False)
    try:
        await store.check_reachable(within=REACHABLE_WITHIN)
    except StoreUnavailable as exc:
        raise CliError(str(exc)) from None
    finally:
        await store.close()


@contextlib.contextmanager
def naming_the_database(url: str, store: Store) -> Iterator[None]:
    """Database errors name the database, since the driver's message often does not.

    The store raises StoreError for whatever its database refused or failed. On SQLite an
    OSError is the file or its folder being unusable (the store creates both).
    """
    try:
        yield
    except Exception as exc:
        if isinstance(exc, StoreError):
            raise CliError(f"database error on {redact(url)}: {exc}") from exc
        if isinstance(exc, OSError) and store.dialect == "sqlite":
            raise CliError(f"cannot use {url}: {exc}") from exc
        raise


@contextlib.asynccontextmanager
async def opened_store(config: Config, *, auto_migrate: bool = True) -> AsyncIterator[Store]:
    """The store `config` names, once it is known to be reachable; closed on the way out."""
    await check_reachable(config.database_url)
    store = open_store(config.database_url, auto_migrate=auto_migrate)
    with naming_the_database(config.database_url, store):
        try:
            yield store
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def opened_runtime(config: Config) -> AsyncIterator[ServiceRuntime]:
    """The service's runtime on the database `config` names, its node not started (`--run`
    starts it); closed on the way out."""
    await check_reachable(config.database_url)
    runtime = service.build_runtime(config)
    with naming_the_database(config.database_url, runtime.store):
        try:
            yield runtime
        finally:
            await runtime.close()


@contextlib.asynccontextmanager
async def opened_admin(config: Config, *, limits: Limits | None = None) -> AsyncIterator[JobAdmin]:
    """The admin door on the store `config` names: the commands that read jobs or act on them
    go through it, so "retry" means in the CLI what it means in the API and the dashboard."""
    async with opened_store(config) as store:
        yield JobAdmin(store, limits=limits)


def setup_logging() -> None:
    """Long-running commands (worker, serve) log what the node does to stderr."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
