"""WorkspaceService: what the `workspace_init` job calls.

`initialize` materializes a workspace under the data directory, from a template folder (copied),
from a git repository in the templates folder (cloned with `git`), or empty, and writes its
metadata. The status moves `pending → initializing → ready`, or `failed` with the error.

It is idempotent: the workspace is built in a private temporary folder and moved into place in
one rename, so a second run (at-least-once delivery) finds it complete and does nothing, and a
run cut short leaves no half-built workspace behind. A run killed outright leaves its temporary
folder, which `sweep_staging` removes when a node next starts (see `staging`).

The metadata goes into `.jobyard`, a folder the build creates itself after the template's files
are in place. A template that brings its own `.jobyard` (a folder, a file or a link) is refused:
jobyard would otherwise write its records wherever that entry leads. The write follows no link
(see `confined`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from jobyard.dispatcher.executor import in_thread
from jobyard.model import Job, PayloadError, PermanentError
from jobyard.queue import Queue
from jobyard.workspaces import confined, templates
from jobyard.workspaces.entities import NAME_PATTERN, EntityStatus, NewWorkspace, Workspace
from jobyard.workspaces.paths import (
    METADATA,
    METADATA_FILE,
    RECORDS,
    check_template_name,
    resolve_template,
    workspace_dir,
)
from jobyard.workspaces.payloads import JOB_TYPE_WORKSPACE_INIT
from jobyard.workspaces.staging import staging_folder, sweep
from jobyard.workspaces.store import WorkspaceStore

__all__ = ["WorkspaceService"]

log = logging.getLogger("jobyard.workspaces.workspace")

_REENTRANT = (EntityStatus.PENDING, EntityStatus.INITIALIZING, EntityStatus.FAILED)


@dataclass
class WorkspaceService:
    store: WorkspaceStore
    queue: Queue
    data_dir: Path
    templates_dir: Path

    async def create(self, name: str, template: str | None = None) -> tuple[Workspace, Job]:
        """Record a new workspace and enqueue its init job, in one transaction."""
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise PayloadError(
                f"workspace name {name!r} is not a safe directory name: use 1-64 letters, "
                "digits, '.', '_' or '-', starting with a letter or digit"
            )
        if template is not None:
            check_template_name(template)
            resolve_template(self.templates_dir, template)
        workspace_id = f"ws_{secrets.token_hex(8)}"
        (job,) = self.queue.build_jobs(JOB_TYPE_WORKSPACE_INIT, [{"workspaceId": workspace_id}])
        created = await self.store.create_workspace(
            NewWorkspace(id=workspace_id, name=name, template=template), job
        )
        self.queue.notify_enqueued()
        return created

    async def initialize(self, workspace_id: str) -> None:
        workspace = await self.store.get_workspace(workspace_id)
        if workspace is None:
            raise PermanentError(f"workspace {workspace_id!r} does not exist")
        target = workspace_dir(self.data_dir, workspace.id)
        if workspace.status is EntityStatus.READY and confined.holds_file(target, METADATA):
            return
        await self.store.set_workspace_status(
            workspace.id, EntityStatus.INITIALIZING, expect=(*_REENTRANT, EntityStatus.READY)
        )
        try:
            await in_thread(self._materialize, workspace, target)
        except Exception as exc:
            shown = self._without_server_paths(exc)
            reason = f"{type(shown).__name__}: {shown}" if str(shown) else type(shown).__name__
            await self.store.set_workspace_status(
                workspace.id, EntityStatus.FAILED, expect=_REENTRANT, error=reason
            )
            if shown is exc:
                raise
            log.warning("workspace %s failed to build: %s", workspace.id, exc)
            raise shown from None
        await self.store.set_workspace_status(workspace.id, EntityStatus.READY, expect=_REENTRANT)

    def _without_server_paths(self, exc: Exception) -> Exception:
        """`exc`, or an error of the same kind with the templates folder and the data directory
        shown as `<templates>` and `<data_dir>`.

        A build's error reaches API users (the workspace's and its job's `error`), who name
        templates by relative path and have no business knowing where the server keeps them.
        The full text still goes to the server's log."""
        text = original = str(exc)
        for folder, shown in ((self.templates_dir, "<templates>"), (self.data_dir, "<data_dir>")):
            forms = {os.path.abspath(folder), os.path.realpath(folder)}
            for form in sorted(forms, key=len, reverse=True):
                text = text.replace(form, shown)
        if text == original:
            return exc
        try:
            same_kind: Exception | None = type(exc)(text)
        except Exception:
            same_kind = None
        if same_kind is None or str(same_kind) != text:  # a class that wants other arguments
            return RuntimeError(f"{type(exc).__name__}: {text}")
        return same_kind

    def _materialize(self, workspace: Workspace, target: Path) -> None:
        if confined.holds_file(target, METADATA):
            return  # built by an earlier run
        target.parent.mkdir(parents=True, exist_ok=True)
        with staging_folder(target.parent, workspace.id) as staging:
            source = self._fill(workspace, staging)
            self._write_metadata(workspace, staging, source)
            try:
                staging.rename(target)
            except OSError:
                if not confined.holds_file(target, METADATA):
                    raise
                # Another run of the same job finished first: its workspace stands.

    def sweep_staging(self, *, now: float | None = None) -> list[str]:
        """Remove the staging folders of builds that died (killed mid-build) and return their
        names; a build in progress, in this process or another, is never touched. Run when a
        node starts; never raises."""
        return sweep(self.data_dir / "workspaces", now=now)

    @staticmethod
    def _write_metadata(workspace: Workspace, staging: Path, source: str) -> None:
        """Create `.jobyard` and write the metadata in it; refuse a template's own `.jobyard`.

        `mkdir` fails on any existing entry, a link included, so the folder written into is
        always the one created here."""
        meta = {
            "id": workspace.id,
            "name": workspace.name,
            "template": workspace.template,
            "source": source,
            "initialized_at": datetime.now(UTC).isoformat(),
        }
        with confined.folder(staging) as fd:
            try:
                os.mkdir(RECORDS, dir_fd=fd)
            except FileExistsError:
                raise templates.TemplateRefused(
                    f"template {workspace.template!r} has its own {RECORDS!r}, which jobyard "
                    "keeps for its own records: remove it from the template"
                ) from None
        with confined.folder(staging, (RECORDS,)) as fd:
            data = (json.dumps(meta, indent=2) + "\n").encode()
            confined.write_atomically(fd, METADATA_FILE, data)

    def _fill(self, workspace: Workspace, staging: Path) -> str:
        """Put the workspace's files in `staging`; returns how ("empty", "copy", "git")."""
        if workspace.template is None:
            staging.mkdir()
            return "empty"
        source = resolve_template(self.templates_dir, workspace.template)
        if not source.is_dir():
            raise FileNotFoundError(f"template {workspace.template!r} does not exist")
        return templates.fill(source, workspace.template, staging)
