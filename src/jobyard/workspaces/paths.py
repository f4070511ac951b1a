"""Where workspaces live on disk, and which template paths are allowed.

A template is named by a path relative to the templates folder. Absolute paths, `..` and
symlinks that lead outside that folder are refused, so a request can never make the service
copy or clone anything else on the machine.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Final

from jobyard.model import PayloadError

__all__ = [
    "METADATA",
    "METADATA_FILE",
    "RECORDS",
    "resolve_template",
    "session_dir",
    "session_parts",
    "workspace_dir",
]

# The service's own folder in every workspace, for its metadata and sessions. The build creates
# it; one that comes from a template is refused, so it never holds anything jobyard did not put
# there when the workspace was built.
RECORDS: Final = ".jobyard"
METADATA_FILE: Final = "workspace.json"
# The workspace's metadata file, from the workspace's root.
METADATA: Final = (RECORDS, METADATA_FILE)


def workspace_dir(data_dir: Path, workspace_id: str) -> Path:
    return data_dir / "workspaces" / workspace_id


def session_parts(session_id: str) -> tuple[str, ...]:
    """The folders from a workspace's root down to a session's own."""
    return (RECORDS, "sessions", session_id)


def session_dir(data_dir: Path, workspace_id: str, session_id: str) -> Path:
    return workspace_dir(data_dir, workspace_id).joinpath(*session_parts(session_id))


def check_template_name(template: str) -> str:
    """Refuse a template name that could point outside the templates folder, or that would
    garble the logs and errors it appears in (control characters such as newlines or escape
    sequences)."""
    if not template or len(template) > 255:
        raise PayloadError("template must be 1 to 255 characters")
    if any(unicodedata.category(char) == "Cc" for char in template):
        raise PayloadError(f"template {template!r} must not contain control characters")
    pure = PurePosixPath(template.replace("\\", "/"))
    if pure.is_absolute() or template.startswith(("/", "\\")) or ":" in template:
        raise PayloadError(f"template {template!r} must be a path inside the templates folder")
    if any(part in ("..", "") for part in template.replace("\\", "/").split("/")):
        raise PayloadError(f"template {template!r} must not contain '..' or empty parts")
    return template


def resolve_template(templates_dir: Path, template: str) -> Path:
    """The real path of `template`, which must stay inside `templates_dir` once every symlink
    is followed. Raises PayloadError otherwise; existence is checked by the caller."""
    check_template_name(template)
    root = Path(os.path.realpath(templates_dir))
    target = Path(os.path.realpath(root / template))
    if target != root and root not in target.parents:
        raise PayloadError(f"template {template!r} leads outside the templates folder")
    return target
