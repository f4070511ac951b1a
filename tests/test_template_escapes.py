"""Templates that try to reach outside their folder, on both stores.

A template may come from a third party: its files, links and `.git` must never make a workspace
or session build write, read or clone anything outside the templates folder and the data
directory. Each attack below must leave the workspace (or session) `failed`, with an error that
names no server path, and the outside folder and file exactly as they were.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobyard import Config, JobStatus
from jobyard.runtime import Runtime, build_runtime
from jobyard.workspaces.entities import EntityStatus
from tests.test_services import FAST, job_reaches, settled

PRECIOUS = "precious: must never be overwritten\n"


@dataclass(frozen=True)
class Outside:
    """A folder and a file outside the data directory, the targets of the attacks."""

    root: Path
    folder: Path
    file: Path

    def assert_untouched(self) -> None:
        assert sorted(os.listdir(self.folder)) == []
        assert self.file.read_text() == PRECIOUS


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    root = tmp_path / "elsewhere"
    (root / "folder").mkdir(parents=True)
    (root / "file.txt").write_text(PRECIOUS)
    return Outside(root, root / "folder", root / "file.txt")


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


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


def commit_all(repo: Path) -> None:
    """Make `repo` a git repository holding everything now in it, links included."""
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")


def outside_repository(outside: Outside) -> Path:
    """A git repository outside the templates folder, which no template may lead a clone to."""
    repo = outside.root / "repo"
    repo.mkdir()
    (repo / "SECRET").write_text("outside the templates folder\n")
    commit_all(repo)
    return repo


async def workspace_fails(rt: Runtime, tmp_path: Path, template: str) -> str:
    """Create a workspace from `template`; it must end failed, with no server path in its
    error and no folder of its own. Returns the error."""
    workspace, _ = await rt.workspaces.create("attempt", template)
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.FAILED
    failed = await rt.store.get_workspace(workspace.id)
    assert failed is not None
    assert failed.error is not None
    assert str(tmp_path) not in failed.error
    assert not (rt.config.data_dir / "workspaces" / workspace.id).exists()
    return failed.error


def template(rt: Runtime, name: str) -> Path:
    folder = rt.workspaces.templates_dir / name
    folder.mkdir()
    (folder / "README").write_text("a template\n")
    return folder


async def test_template_with_a_jobyard_link_is_refused_and_its_session_fails(
    rt: Runtime, tmp_path: Path, outside: Outside
) -> None:
    (template(rt, "evil") / ".jobyard").symlink_to(outside.folder)
    workspace, _ = await rt.workspaces.create("attempt", "evil")
    session, _ = await rt.sessions.create(workspace.id)
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.FAILED
    assert await settled(rt, "session", session.id) is EntityStatus.FAILED
    failed = await rt.store.get_workspace(workspace.id)
    assert failed is not None
    assert failed.error is not None
    assert "template 'evil'" in failed.error
    assert ".jobyard" in failed.error
    assert str(tmp_path) not in failed.error
    outside.assert_untouched()


async def test_template_whose_metadata_file_is_a_link_leaves_the_outside_file_alone(
    rt: Runtime, tmp_path: Path, outside: Outside
) -> None:
    (template(rt, "evil") / ".jobyard").mkdir()
    (rt.workspaces.templates_dir / "evil" / ".jobyard" / "workspace.json").symlink_to(outside.file)
    error = await workspace_fails(rt, tmp_path, "evil")
    assert "'.jobyard'" in error
    outside.assert_untouched()


async def test_template_with_its_own_jobyard_folder_is_refused(rt: Runtime, tmp_path: Path) -> None:
    """`.jobyard` holds the service's own records; a template may not bring one (a copy of a
    workspace used as a template, for example), even without any link in it."""
    (template(rt, "copied") / ".jobyard").mkdir()
    (rt.workspaces.templates_dir / "copied" / ".jobyard" / "workspace.json").write_text("{}\n")
    error = await workspace_fails(rt, tmp_path, "copied")
    assert "remove it from the template" in error


@pytest.mark.parametrize("planted", [".jobyard", ".jobyard/sessions"])
async def test_session_refuses_a_link_planted_in_a_ready_workspace(
    rt: Runtime, tmp_path: Path, outside: Outside, planted: str
) -> None:
    workspace, _ = await rt.workspaces.create("target")
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.READY
    root = rt.config.data_dir / "workspaces" / workspace.id
    if planted == ".jobyard":
        (root / ".jobyard").rename(root / "moved-away")
    (root / planted).symlink_to(outside.folder)
    session, _ = await rt.sessions.create(workspace.id)
    assert await settled(rt, "session", session.id) is EntityStatus.FAILED
    failed = await rt.store.get_session(session.id)
    assert failed is not None
    assert failed.error is not None
    assert f"workspace {workspace.id}: '{planted}' is a link or not a folder" in failed.error
    assert str(tmp_path) not in failed.error
    outside.assert_untouched()


@pytest.mark.parametrize("link", [".jobyard", ".jobyard/workspace.json"])
async def test_git_template_with_a_committed_link_is_refused(
    rt: Runtime, tmp_path: Path, outside: Outside, link: str
) -> None:
    repo = template(rt, "repo")
    if link == ".jobyard":
        (repo / ".jobyard").symlink_to(outside.folder)
    else:
        (repo / ".jobyard").mkdir()
        (repo / ".jobyard" / "workspace.json").symlink_to(outside.file)
    await asyncio.to_thread(commit_all, repo)
    error = await workspace_fails(rt, tmp_path, "repo")
    assert "'.jobyard'" in error
    outside.assert_untouched()


async def test_git_template_whose_git_is_a_link_is_not_cloned(
    rt: Runtime, tmp_path: Path, outside: Outside
) -> None:
    elsewhere = await asyncio.to_thread(outside_repository, outside)
    (template(rt, "borrowed") / ".git").symlink_to(elsewhere / ".git")
    error = await workspace_fails(rt, tmp_path, "borrowed")
    assert "template 'borrowed'" in error
    assert ".git" in error
    outside.assert_untouched()


async def test_git_template_whose_git_is_a_gitdir_file_is_not_cloned(
    rt: Runtime, tmp_path: Path, outside: Outside
) -> None:
    elsewhere = await asyncio.to_thread(outside_repository, outside)
    (template(rt, "pointer") / ".git").write_text(f"gitdir: {elsewhere / '.git'}\n")
    error = await workspace_fails(rt, tmp_path, "pointer")
    assert "template 'pointer'" in error
    assert ".git" in error
    outside.assert_untouched()


async def test_git_template_borrowing_objects_through_alternates_is_not_cloned(
    rt: Runtime, tmp_path: Path, outside: Outside
) -> None:
    elsewhere = await asyncio.to_thread(outside_repository, outside)
    target = rt.workspaces.templates_dir / "shared"
    await asyncio.to_thread(
        subprocess.run,
        ["git", "clone", "-q", "--shared", str(elsewhere), str(target)],
        check=True,
    )
    assert (target / ".git" / "objects" / "info" / "alternates").is_file()
    error = await workspace_fails(rt, tmp_path, "shared")
    assert "alternates" in error
    outside.assert_untouched()


async def test_git_template_that_is_a_worktree_of_an_outside_repository_is_not_cloned(
    rt: Runtime, tmp_path: Path, outside: Outside
) -> None:
    """A `.git` folder with `commondir` reads its objects and refs from another repository."""
    elsewhere = await asyncio.to_thread(outside_repository, outside)
    await asyncio.to_thread(git, elsewhere, "worktree", "add", "-q", str(outside.root / "wt"))
    gitdir = rt.workspaces.templates_dir / "worktree" / ".git"
    gitdir.parent.mkdir()
    await asyncio.to_thread(
        subprocess.run,
        ["cp", "-R", str(elsewhere / ".git" / "worktrees" / "wt"), str(gitdir)],
        check=True,
    )
    (gitdir / "commondir").write_text(f"{elsewhere / '.git'}\n")
    error = await workspace_fails(rt, tmp_path, "worktree")
    assert "commondir" in error
    outside.assert_untouched()


async def test_git_template_with_a_link_inside_its_git_folder_is_not_cloned(
    rt: Runtime, tmp_path: Path, outside: Outside
) -> None:
    elsewhere = await asyncio.to_thread(outside_repository, outside)
    repo = template(rt, "linked")
    await asyncio.to_thread(commit_all, repo)
    refs = repo / ".git" / "refs"
    await asyncio.to_thread(subprocess.run, ["rm", "-rf", str(refs)], check=True)
    refs.symlink_to(elsewhere / ".git" / "refs")
    error = await workspace_fails(rt, tmp_path, "linked")
    assert "link" in error
    head = (elsewhere / ".git" / "refs" / "heads").iterdir()
    assert next(head).read_text().strip() not in error  # nothing read from the outside refs
    outside.assert_untouched()


async def test_a_failed_clone_reports_no_server_path(rt: Runtime, tmp_path: Path) -> None:
    """git's own message names the paths it was given; users see them relative."""
    (template(rt, "hollow") / ".git").mkdir()
    error = await workspace_fails(rt, tmp_path, "hollow")
    assert "'<templates>/hollow'" in error
    (job,) = await rt.store.list_jobs()
    await job_reaches(rt, job.id, JobStatus.FAILED)
    failed_job = await rt.store.get_job(job.id)
    assert failed_job is not None
    assert failed_job.error is not None
    assert failed_job.error.startswith("RuntimeError: git clone of template 'hollow' failed")
    assert str(tmp_path) not in failed_job.error


async def test_a_failed_copy_reports_no_server_path(rt: Runtime, tmp_path: Path) -> None:
    """A named pipe cannot be copied; the copy's error names both ends by absolute path."""
    os.mkfifo(template(rt, "piped") / "pipe")
    error = await workspace_fails(rt, tmp_path, "piped")
    assert "<templates>/piped/pipe" in error
    assert "<data_dir>/workspaces/.staging-" in error


async def test_links_inside_a_template_are_copied_as_links(rt: Runtime, outside: Outside) -> None:
    """Relative links are part of many projects; links are kept as links, never followed."""
    folder = template(rt, "with-links")
    (folder / "docs").symlink_to("README")
    (folder / "away").symlink_to(outside.file)
    workspace, _ = await rt.workspaces.create("linked", "with-links")
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.READY
    root = rt.config.data_dir / "workspaces" / workspace.id
    assert os.readlink(root / "docs") == "README"
    assert os.readlink(root / "away") == str(outside.file)
    session, _ = await rt.sessions.create(workspace.id)
    assert await settled(rt, "session", session.id) is EntityStatus.READY
    outside.assert_untouched()


async def test_git_template_with_a_committed_relative_link_is_cloned(rt: Runtime) -> None:
    repo = template(rt, "repo")
    (repo / "docs").symlink_to("README")
    await asyncio.to_thread(commit_all, repo)
    workspace, _ = await rt.workspaces.create("cloned", "repo")
    assert await settled(rt, "workspace", workspace.id) is EntityStatus.READY
    root = rt.config.data_dir / "workspaces" / workspace.id
    assert os.readlink(root / "docs") == "README"
