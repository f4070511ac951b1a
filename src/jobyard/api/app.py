"""The FastAPI application: JSON API, health, metrics and the dashboard, on one runtime, with
what extensions add (see `jobyard.api.extensions`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from jobyard.api import dashboard
from jobyard.api.extensions import Extension
from jobyard.api.metrics import Metrics
from jobyard.api.pages import Pages
from jobyard.api.redirects import RelativeRedirects
from jobyard.api.routes import api, api_door, health
from jobyard.api.security import BodyLimits, CrossSiteGuard
from jobyard.api.sessions import SignIns
from jobyard.api.settings import ServerSettings
from jobyard.api.throttle import FailureBudget
from jobyard.model import JobyardError, StoreError
from jobyard.runtime import Runtime

__all__ = ["create_app"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")

log = logging.getLogger("jobyard.api")


def _report_node_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the worker node stopped: %r; /healthz now answers 503", task.exception())


def create_app(
    runtime: Runtime,
    settings: ServerSettings,
    *,
    run_worker: bool = True,
    extensions: Sequence[Extension] = (),
) -> FastAPI:
    """The service on `runtime`: the engine's API and dashboard, and each extension's routes
    and panel. With `run_worker`, the app also runs the runtime's dispatcher for its lifetime
    (one process serves the API and works jobs: `jobyard serve`).

    On an engine-only runtime (`build_runtime`) with no extensions, that is all it serves;
    `jobyard serve` adds the workspace platform's extension. Raises ValueError when two
    extensions share a name or two panels a form's path.
    """
    pages = Pages(extensions)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.migrate()
        node = asyncio.create_task(runtime.dispatcher.start()) if run_worker else None
        if node is not None:
            node.add_done_callback(_report_node_exit)
        app.state.node = node
        try:
            yield
        finally:
            try:
                if node is not None:
                    await runtime.dispatcher.stop()
                    with contextlib.suppress(Exception):
                        await node
            finally:
                await runtime.close()

    app = FastAPI(
        title="jobyard",
        summary="Durable background jobs: workspaces, sessions and the jobs that build them.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    token = settings.api_token.get_secret_value() if settings.api_token else None
    app.state.api_token = token
    # Both in this process's memory: sign-ins and guessing budgets end with the process.
    app.state.sign_ins = SignIns()
    app.state.auth_failures = FailureBudget(settings.auth_failures, settings.auth_failure_interval)
    app.state.pages = pages
    metrics = Metrics(runtime)
    # The engine's routes first: where an extension's path overlaps one, the engine's answers.
    door = api_door()
    door.include_router(api)
    for extension in extensions:
        for router in extension.routers:
            door.include_router(router)
    app.include_router(door)
    app.include_router(health)
    app.include_router(dashboard.router)
    app.include_router(dashboard.panel_forms(pages))

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(await metrics.render(), media_type="text/plain; version=0.0.4")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input back, which fails for NaN or lone
        # surrogates (a 500); say where and what, never the raw input.
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and request.url.path.startswith("/api/"):
            # The framework's answer to a body it could not parse at all (nested too deeply,
            # not UTF-8, absurd numbers): like any other malformed payload, that is a 422.
            return JSONResponse(
                {"detail": f"the request body is not usable JSON: {exc.detail}"},
                status_code=422,
            )
        return await http_exception_handler(request, exc)

    @app.exception_handler(StoreError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The database, not the caller, is at fault: a 503 the client may retry.
        log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": f"the database is unavailable: {type(exc).__name__}"}, status_code=503
        )

    @app.exception_handler(JobyardError)
    async def jobyard_error(request: Request, exc: JobyardError) -> JSONResponse:
        # Anything the routes did not map themselves is still the caller's fault or a clear
        # operational error, never a bare 500 with a traceback.
        return JSONResponse({"detail": str(exc)}, status_code=422)

    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    # Outside the body limits: a cross-site request is refused before its body is read.
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(RelativeRedirects)
    if token is None:
        # Without a token the server is on loopback only; refusing other Host names stops a
        # web page from reaching it through DNS rebinding.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_NAMES))
    return app
