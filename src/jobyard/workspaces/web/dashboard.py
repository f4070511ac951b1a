"""The platform's dashboard panel: a "New workspace" form above the live part, and the newest
workspaces and sessions inside it, refreshed with the rest of the page.

The engine serves the form's route (`POST /ui/workspaces`): who may act, reading the form and
the cross-site guard are its, not this module's. What is here decides what a workspace is: a
bad name or template is refused by the service before anything is stored, and the page then
shows why, with the form still filled in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from jobyard.api.extensions import FormRefused, Panel
from jobyard.model import PayloadError, UnknownJobType
from jobyard.workspaces.runtime import WorkspaceRuntime

__all__ = ["RECENT_ENTITIES", "workspace_panel"]

RECENT_ENTITIES: Final = 20


def workspace_panel(runtime: WorkspaceRuntime) -> Panel:
    """The panel on `runtime`'s services and store; its templates are in `templates/`."""

    async def recent() -> Mapping[str, Any]:
        return {
            "workspaces": await runtime.workspace_store.list_workspaces(limit=RECENT_ENTITIES),
            "sessions": await runtime.workspace_store.list_sessions(limit=RECENT_ENTITIES),
        }

    async def create_workspace(fields: Mapping[str, str]) -> None:
        """Create a workspace from the form."""
        name = fields.get("name", "").strip()
        template = fields.get("template", "").strip() or None
        try:
            await runtime.workspaces.create(name, template)
        except (PayloadError, UnknownJobType) as exc:
            raise FormRefused(str(exc), {"name": name, "template": template or ""}) from None

    return Panel(
        package="jobyard.workspaces.web",
        top="form.html",
        live="live.html",
        load_live=recent,
        forms={"/ui/workspaces": create_workspace},
    )
