"""SessionService: what the `session_init` job calls.

A session lives inside a ready workspace: `initialize` creates its folder and state file there
and moves it to `ready`. While its workspace is still being built the job snoozes (without using
an attempt); if the workspace failed, the session fails with a reason that says so. Idempotent:
the state file is written atomically, and a ready session is left alone.

The workspace's files belong to its users, who may have replaced any folder in it with a link
since it was built. The state is written through `confined`, which follows no link, so a session
never writes outside its workspace: a link on the way fails the session instead.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobyard.dispatcher.executor import in_thread
from jobyard.model import Job, PermanentError, Snooze
from jobyard.queue import Queue
from jobyard.store.ports import AdminStore
from jobyard.workspaces import confined
from jobyard.workspaces.entities import EntityStatus, NewSession, Session
from jobyard.workspaces.paths import session_parts, workspace_dir
from jobyard.workspaces.payloads import JOB_TYPE_SESSION_INIT
from jobyard.workspaces.store import WorkspaceStore

__all__ = ["SessionService"]

STATE_FILE = "state.json"
_REENTRANT = (EntityStatus.PENDING, EntityStatus.INITIALIZING, EntityStatus.FAILED)


@dataclass
class SessionService:
    store: WorkspaceStore
    queue: Queue
    data_dir: Path
    # Where its workspace's init job is read, to tell a failed workspace that will be retried.
    jobs: AdminStore
    # How long a session waits for its workspace to become ready before it gives up.
    workspace_wait: timedelta = timedelta(hours=1)
    poll_seconds: float = 0.5

    async def create(self, workspace_id: str) -> tuple[Session, Job]:
        """Record a new session of `workspace_id` and enqueue its init job, in one
        transaction. Raises NotFound, storing nothing, if the workspace does not exist."""
        session_id = f"se_{secrets.token_hex(8)}"
        (job,) = self.queue.build_jobs(JOB_TYPE_SESSION_INIT, [{"sessionId": session_id}])
        created = await self.store.create_session(
            NewSession(id=session_id, workspace_id=workspace_id), job
        )
        self.queue.notify_enqueued()
        return created

    async def initialize(self, session_id: str) -> None:
        session = await self.store.get_session(session_id)
        if session is None:
            raise PermanentError(f"session {session_id!r} does not exist")
        root = workspace_dir(self.data_dir, session.workspace_id)
        state = (*session_parts(session.id), STATE_FILE)
        if session.status is EntityStatus.READY and confined.holds_file(root, state):
            return
        workspace = await self.store.get_workspace(session.workspace_id)
        if workspace is None:
            await self._fail(session, f"workspace {session.workspace_id} does not exist")
        assert workspace is not None
        if workspace.status is EntityStatus.FAILED and await self._gave_up(workspace.job_id):
            await self._fail(session, f"workspace {workspace.id} failed: {workspace.error}")
        if workspace.status is not EntityStatus.READY:
            if datetime.now(UTC) - session.created_at > self.workspace_wait:
                await self._fail(
                    session,
                    f"workspace {workspace.id} was not ready after {self.workspace_wait}",
                )
            raise Snooze(self.poll_seconds, f"waiting for workspace {workspace.id}")
        await self.store.set_session_status(
            session.id, EntityStatus.INITIALIZING, expect=(*_REENTRANT, EntityStatus.READY)
        )
        try:
            await in_thread(self._write_state, session, root)
        except Exception as exc:
            await self.store.set_session_status(
                session.id, EntityStatus.FAILED, expect=_REENTRANT, error=str(exc)
            )
            raise
        await self.store.set_session_status(session.id, EntityStatus.READY, expect=_REENTRANT)

    async def _gave_up(self, job_id: int | None) -> bool:
        """A failed workspace whose init job still has attempts left may yet become ready."""
        if job_id is None:
            return True
        job = await self.jobs.get_job(job_id)
        return job is None or job.status.is_final

    async def _fail(self, session: Session, reason: str) -> None:
        await self.store.set_session_status(
            session.id, EntityStatus.FAILED, expect=_REENTRANT, error=reason
        )
        raise PermanentError(reason)

    @staticmethod
    def _write_state(session: Session, workspace_root: Path) -> None:
        """Raises UnsafePath, writing nothing, if a folder on the way is a link."""
        state = {
            "id": session.id,
            "workspace_id": session.workspace_id,
            "initialized_at": datetime.now(UTC).isoformat(),
        }
        data = (json.dumps(state, indent=2) + "\n").encode()
        try:
            with confined.folder(workspace_root, session_parts(session.id), create=True) as fd:
                confined.write_atomically(fd, STATE_FILE, data)
        except confined.UnsafePath as exc:
            raise confined.UnsafePath(f"workspace {session.workspace_id}: {exc}") from None
