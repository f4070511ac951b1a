"""Workspaces and sessions: the services behind the seed's job types, on both stores."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobyard import Config, JobStatus, NotFound, PayloadError
from jobyard.runtime import Runtime, build_runtime
from jobyard.workspaces.entities import EntityStatus

FAST = {
    "job_poll_interval": 0.05,
    "heartbeat_interval": 0.2,
    "leader_lease_duration": 1.0,
    "retry_backoff": 0.01,
    "retry_backoff_max": 0.02,
}


@pytest.fixture
async def rt(store_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    config = Config(**FAST, database_url=store_url, data_dir=tmp_path / "data")
    runtime = build_runtime(config)
    runtime.workspaces.templates_dir.mkdir(parents=True)
    node = asyncio.create_task(runtime.dispatcher.start())
    yield runtime
    await runtime.dispatcher.stop()
    await node
    await runtime.close()


async def settled(rt: Runtime, kind: str, entity_id: str, within: float = 10.0) -> EntityStatus:
    """Wait until a workspace or session reaches ready or failed (it is another task's work)."""
    get = rt.store.get_workspace if kind == "workspace" else rt.store.get_session
    deadline = time.monotonic() + within
    while True:
        entity = await get(entity_id)
        assert entity is not None
        if entity.status in (EntityStatus.READY, EntityStatus.FAILED):
            return entity.status
        assert time.monotonic() < deadline, f"{kind} {entity_id} stuck in {entity.status}"
        await asyncio.sleep(0.02)


async def job_reaches(rt: Runtime, job_id: int, status: JobStatus, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while (job := await rt.store.get_job(job_id)) is None or job.status is not status:
        assert time.monotonic() < deadline, f"job {job_id} never reached {status}"
        await asyncio.sleep(0.02)


async def test_empty_workspace_and_its_session_become_ready_with_files(rt: Runtime) -> None:
    workspace, job = await rt.workspaces.create("demo")
    assert workspace.status is EntityStatus.PENDING
    assert job.payload == {"workspaceId": workspace.id}
    assert workspace.job_id == job.id
    session, session_job = await rt.sessions.create(workspace.id)
    assert session_job.payload == {"sessionId": session.id}
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.READY
    assert await settled(rt, "session", session.id) is EntityStatus.READY
    root = rt.config.data_dir / "workspaces" / workspace.id
    meta = json.loads((root / ".jobyard" / "workspace.json").read_text())
    assert (meta["name"], meta["source"]) == ("demo", "empty")
    state = json.loads((root / ".jobyard" / "sessions" / session.id / "state.json").read_text())
    assert state["workspace_id"] == workspace.id


async def test_workspace_from_a_template_folder_is_a_copy(rt: Runtime) -> None:
    template = rt.workspaces.templates_dir / "starter"
    (template / "src").mkdir(parents=True)
    (template / "src" / "main.py").write_text("print('hi')\n")
    workspace, _ = await rt.workspaces.create("from-template", "starter")
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.READY
    root = rt.config.data_dir / "workspaces" / workspace.id
    assert (root / "src" / "main.py").read_text() == "print('hi')\n"


def make_git_repo(repo: Path) -> None:
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)


async def test_workspace_from_a_git_repository_is_a_clone(rt: Runtime) -> None:
    repo = rt.workspaces.templates_dir / "repo"
    repo.mkdir()
    (repo / "README").write_text("from git\n")
    await asyncio.to_thread(make_git_repo, repo)
    workspace, _ = await rt.workspaces.create("cloned", "repo")
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.READY
    root = rt.config.data_dir / "workspaces" / workspace.id
    assert (root / "README").read_text() == "from git\n"
    assert (root / ".git").is_dir()
    meta = json.loads((root / ".jobyard" / "workspace.json").read_text())
    assert meta["source"] == "git"


async def test_missing_template_fails_then_a_retry_after_the_fix_succeeds(rt: Runtime) -> None:
    workspace, job = await rt.workspaces.create("broken", "not-there")
    session, _ = await rt.sessions.create(workspace.id)
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.FAILED
    failed = await rt.store.get_workspace(workspace.id)
    assert failed is not None
    assert failed.error is not None
    assert "'not-there' does not exist" in failed.error
    assert await settled(rt, "session", session.id) is EntityStatus.FAILED
    failed_session = await rt.store.get_session(session.id)
    assert failed_session is not None
    assert failed_session.error is not None
    assert f"workspace {workspace.id} failed" in failed_session.error

    await job_reaches(rt, job.id, JobStatus.FAILED)
    (rt.workspaces.templates_dir / "not-there").mkdir()
    await rt.store.retry_job(job.id)
    await job_reaches(rt, job.id, JobStatus.COMPLETED)
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.READY
    new_session, _ = await rt.sessions.create(workspace.id)
    assert await settled(rt, "session", new_session.id) is EntityStatus.READY


async def test_initialize_is_idempotent(rt: Runtime) -> None:
    workspace, _ = await rt.workspaces.create("twice")
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.READY
    meta = rt.config.data_dir / "workspaces" / workspace.id / ".jobyard" / "workspace.json"
    before = meta.read_text()
    await rt.workspaces.initialize(workspace.id)
    assert meta.read_text() == before
    again = await rt.store.get_workspace(workspace.id)
    assert again is not None
    assert again.status is EntityStatus.READY


async def test_session_of_a_missing_workspace_stores_nothing(rt: Runtime) -> None:
    with pytest.raises(NotFound):
        await rt.sessions.create("ws_does_not_exist")
    assert await rt.store.list_jobs() == []
    assert await rt.store.list_sessions() == []


@pytest.mark.parametrize(
    "template", ["../outside", "/etc", "a/../../b", "C:\\windows", "", "x\x00y", "a//b"]
)
async def test_template_paths_that_could_escape_are_refused(rt: Runtime, template: str) -> None:
    with pytest.raises(PayloadError):
        await rt.workspaces.create("escape", template)
    assert await rt.store.list_workspaces() == []
    assert await rt.store.list_jobs() == []


@pytest.mark.parametrize(
    "template", ["a\nb", "tab\there", "bell\x07", "del\x7f", "c1\x85", "\x1b[31m"]
)
async def test_template_names_with_control_characters_are_refused(
    rt: Runtime, template: str
) -> None:
    with pytest.raises(PayloadError, match="control characters"):
        await rt.workspaces.create("ctl", template)
    assert await rt.store.list_workspaces() == []
    assert await rt.store.list_jobs() == []


async def test_template_symlink_leading_outside_is_refused(rt: Runtime, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (rt.workspaces.templates_dir / "sneaky").symlink_to(outside)
    with pytest.raises(PayloadError, match="outside"):
        await rt.workspaces.create("escape", "sneaky")
    assert await rt.store.list_jobs() == []


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65, "sp ace", "semi;colon"])
async def test_unsafe_workspace_names_are_refused(rt: Runtime, name: str) -> None:
    with pytest.raises(PayloadError, match="safe directory name"):
        await rt.workspaces.create(name)
    assert await rt.store.list_workspaces() == []
