"""The platform's web parts: its JSON routes, its dashboard panel and their templates, as one
extension of the engine's HTTP service.

    runtime = build_workspace_runtime(config)
    app = create_app(runtime, settings, extensions=[workspace_extension(runtime)])

is what `jobyard serve` serves. Kept apart from the rest of `jobyard.workspaces` because they
need the `server` extra (FastAPI, Jinja2), which the platform's services, executors and store do
not: `jobyard worker` runs the platform without them, and `jobyard.workspaces` never imports
this package.
"""

from __future__ import annotations

from jobyard.api.extensions import Extension
from jobyard.workspaces.runtime import WorkspaceRuntime
from jobyard.workspaces.web.api import workspace_router
from jobyard.workspaces.web.dashboard import workspace_panel

__all__ = ["workspace_extension", "workspace_panel", "workspace_router"]


def workspace_extension(runtime: WorkspaceRuntime) -> Extension:
    """The platform's routes and panel, on `runtime`: give it the runtime you give `create_app`.

    Its tables need no hook of their own: `runtime.migrate()`, which the app calls at startup,
    migrates the platform's line after the engine's.
    """
    return Extension(
        "workspaces",
        routers=[workspace_router(runtime)],
        panel=workspace_panel(runtime),
    )
