"""Staging folders: a build killed mid-way leaves one, and the next node to start removes it,
while a build still running (in another process) keeps its own."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jobyard import Config
from jobyard.runtime import build_runtime
from jobyard.workspaces.entities import EntityStatus
from jobyard.workspaces.staging import LOCK_SUFFIX, staging_folder, sweep
from tests.test_services import FAST, settled

SCRIPT = Path(__file__).parent / "halted_build.py"


@dataclass
class HaltedBuild:
    """A build in a process of its own, stopped with its staging folder filled and locked."""

    proc: subprocess.Popen[str]
    folder: Path

    @property
    def lock(self) -> Path:
        return self.folder.with_name(self.folder.name + LOCK_SUFFIX)


def start_halted_build(database_url: str, data_dir: Path, workspace_id: str) -> HaltedBuild:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), database_url, str(data_dir), workspace_id],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the build says when it is half-way
    if not line.startswith("staged "):
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the build never reached its staging folder: {line!r} {err}")
    return HaltedBuild(proc, data_dir / "workspaces" / line.split()[1])


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


async def test_start_up_sweeps_a_build_killed_mid_way_and_spares_a_live_one(
    store_url: str, tmp_path: Path
) -> None:
    config = Config(**FAST, database_url=store_url, data_dir=tmp_path / "data")
    first = build_runtime(config)  # never started: the builds run in processes of their own
    template = first.workspaces.templates_dir / "big"
    template.mkdir(parents=True)
    for n in range(3):
        (template / f"blob{n}").write_bytes(os.urandom(1 << 20))
    killed_ws, _ = await first.workspaces.create("killed", "big")
    live_ws, _ = await first.workspaces.create("live", "big")
    await first.close()
    data = config.data_dir
    killed = await asyncio.to_thread(start_halted_build, store_url, data, killed_ws.id)
    live = await asyncio.to_thread(start_halted_build, store_url, data, live_ws.id)
    try:
        killed.proc.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(killed.proc.wait) == -signal.SIGKILL
        for build in (killed, live):
            assert (build.folder / "blob2").is_file()
            age(build.lock, 120)  # the next start is a while later: past the fresh-lock guard

        second = build_runtime(config)  # a node starting on this host

        assert not killed.folder.exists()
        assert not killed.lock.exists()
        assert (live.folder / "blob2").is_file()
        assert live.lock.is_file()
        assert live.proc.poll() is None
        node = asyncio.create_task(second.dispatcher.start())
        try:  # the killed build's job is still there, and a node builds the workspace
            assert await settled(second, "workspace", killed_ws.id) is EntityStatus.READY
        finally:
            await second.dispatcher.stop()
            await node
            await second.close()
    finally:
        live.proc.kill()
        live.proc.communicate()
        killed.proc.communicate()


def test_a_build_in_progress_is_never_swept_however_old(tmp_path: Path) -> None:
    with staging_folder(tmp_path, "ws_busy") as folder:
        folder.mkdir()
        lock = folder.with_name(folder.name + LOCK_SUFFIX)
        age(lock, 10 * 3600)
        assert sweep(tmp_path, now=time.time() + 10 * 3600) == []
        assert folder.is_dir()
    assert os.listdir(tmp_path) == []  # the build cleans up after itself


def test_unlocked_leftovers_are_swept_by_their_age(tmp_path: Path) -> None:
    """A free lock naming this host is a dead build's once a minute has passed; one naming
    another host (whose locks may not be visible here) or none, or no lock file at all (from a
    version before the locks), waits an hour. Links are removed, never followed."""
    parent = tmp_path / "workspaces"
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (parent / "ws_built").mkdir(parents=True)
    here = socket.gethostname()
    leftovers = {
        "ws_a": ("folder", here),
        "ws_b": ("folder", None),
        "ws_c": (None, here),
        "ws_d": ("link", None),
        "ws_e": ("folder", "another-host"),
        "ws_f": ("folder", ""),
    }
    for workspace_id, (kind, host) in leftovers.items():
        folder = parent / f".staging-{workspace_id}-00000000"
        if kind == "folder":
            folder.mkdir()
        elif kind == "link":
            folder.symlink_to(outside)
        if host is not None:
            (parent / f"{folder.name}{LOCK_SUFFIX}").write_text(host)
    age(parent / f".staging-ws_c-00000000{LOCK_SUFFIX}", 120)
    now = time.time()

    def swept(later: float) -> list[str]:
        return [name.split("-")[1] for name in sweep(parent, now=now + later)]

    assert swept(0) == ["ws_c"]
    assert swept(61) == ["ws_a"]
    assert swept(3000) == []
    assert swept(3601) == ["ws_b", "ws_d", "ws_e", "ws_f"]
    assert os.listdir(parent) == ["ws_built"]
    assert os.listdir(outside) == ["keep"]


def test_sweep_of_a_data_directory_with_no_workspaces_does_nothing(tmp_path: Path) -> None:
    assert sweep(tmp_path / "missing") == []
