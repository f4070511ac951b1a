"""Running the service: uvicorn on the app, on sockets bound before anything else starts.

`bind` takes the listening address first, so a port already in use is reported at once, before
the database is touched or a node joins the cluster, and nothing else can take the port between
the check and the server starting. `serve` then runs uvicorn on those sockets with the
connection guards of `jobyard.api.connections`, until SIGINT or SIGTERM; uvicorn then stops the
app, which drains the node, and `serve` returns normally, so the process exits 0.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from jobyard.api.app import create_app
from jobyard.api.connections import ConnectionLimits, guarded_protocol
from jobyard.api.settings import ServerSettings
from jobyard.config import Config
from jobyard.model import ConfigError, JobyardError

__all__ = ["PortInUse", "StartupFailed", "bind", "build_server", "serve", "serve_app"]

log = logging.getLogger("jobyard.server")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class PortInUse(ConfigError):
    """Another program listens on the port asked for."""


class StartupFailed(JobyardError):
    """The app did not start (its startup raised); the log above says why."""


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address `host` names (one for an IP, both loopbacks for
    `localhost`), on `port`, or on one free port for all of them when `port` is 0.

    Raises `PortInUse` when the port is taken, and `ConfigError` when the address cannot be
    listened on at all (not this machine's, a port that needs privileges, a name that does not
    resolve); nothing is left open then.
    """
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror}") from None
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            if sockets and port == 0:  # the same free port on every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock = _listen(family, address, len(addresses) > 1)
            if sock is not None:
                sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise ConfigError(f"cannot listen on {host}: none of its addresses is this machine's")
    return sockets


def _listen(
    family: socket.AddressFamily, address: tuple[Any, ...], optional_v6: bool
) -> socket.socket | None:
    port = address[1]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # As asyncio's create_server does: restart at once after a stop, and an IPv6 socket
        # that takes IPv6 only, so the IPv4 one can bind the same port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} is in use (try --port)") from None
        if exc.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6 and optional_v6:
            return None  # `localhost` on a machine without IPv6: its IPv4 address will do
        raise ConfigError(f"cannot listen on {address[0]} port {port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop signal ends it like any clean return.

    uvicorn re-raises SIGINT or SIGTERM once it has shut down, so that the process dies of the
    signal (status 143 for SIGTERM). jobyard drains the node first and promises exit 0, as
    `jobyard worker` does, so here the signal only asks the server to stop; a second SIGINT
    still forces it, as in uvicorn.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach only the main thread: whoever runs us there handles them
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def build_server(
    app: ASGIApp,
    settings: ServerSettings,
    *,
    graceful_shutdown: int | None = None,
    log_level: str = "info",
    access_log: bool = False,
) -> uvicorn.Server:
    """The uvicorn server `serve` runs, with the connection guards; tests run the same one."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(ConnectionLimits.from_settings(settings)),
        lifespan="on",
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=graceful_shutdown,
    )
    return _Server(config)


def serve_app(
    app: ASGIApp,
    settings: ServerSettings,
    *,
    sockets: Sequence[socket.socket] | None = None,
    graceful_shutdown: int | None = None,
) -> None:
    """Run `app` as `jobyard serve` does, until SIGINT or SIGTERM, then return.

    On `sockets` from `bind`, or on sockets bound here from `settings` (raising `PortInUse`
    before anything else happens). Raises `StartupFailed` when the app's startup fails.
    `graceful_shutdown` bounds, in seconds, how long requests in flight may take to finish.
    """
    listeners = list(sockets) if sockets is not None else bind(settings.host, settings.port)
    try:
        server = build_server(app, settings, graceful_shutdown=graceful_shutdown)
        for sock in listeners:
            host, port = sock.getsockname()[:2]
            log.info("listening on %s port %d (Ctrl-C or SIGTERM stops and drains)", host, port)
        try:
            server.run(sockets=listeners)
        except SystemExit as exc:
            # uvicorn exits the process when the app's startup fails (status 3, which the
            # CLI does not document); older versions return without having started instead.
            if exc.code not in (0, None):
                raise StartupFailed("the server did not start: see the log above") from None
            raise
        if not server.started:
            raise StartupFailed("the server did not start: see the log above")
    finally:
        for sock in listeners:
            sock.close()


def serve(
    config: Config,
    settings: ServerSettings,
    *,
    run_worker: bool = True,
    sockets: Sequence[socket.socket] | None = None,
) -> None:
    """Serve what `jobyard serve` serves, the engine's API and dashboard with the workspace
    platform's routes and panel (and, with `run_worker`, a worker node), until SIGINT or
    SIGTERM; uvicorn then stops the app, which drains the node, and this returns.

    `sockets` are listening sockets from `bind`; without them, `bind` is called here first,
    before the runtime is built.

    This is where the engine's HTTP service and the platform are put together, and the only
    place in `jobyard.api` that imports the platform: here, not at the top of the module, so
    an app built on the engine alone never loads it.
    """
    from jobyard.workspaces.runtime import build_workspace_runtime
    from jobyard.workspaces.web import workspace_extension

    settings.check_exposure()
    listeners = list(sockets) if sockets is not None else bind(settings.host, settings.port)
    try:
        runtime = build_workspace_runtime(config)
        platform = workspace_extension(runtime)
        app = create_app(runtime, settings, run_worker=run_worker, extensions=[platform])
        grace = int(config.shutdown_grace_period.total_seconds()) + 5
        serve_app(app, settings, sockets=listeners, graceful_shutdown=grace)
    finally:
        for sock in listeners:
            sock.close()
