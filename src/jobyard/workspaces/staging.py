"""Staging folders: where a workspace is assembled before it is renamed into place.

A build killed half-way (SIGKILL, power cut) leaves its staging folder behind, and nothing else
would ever remove it. So each build holds an exclusive `flock` on a lock file beside its folder,
`<staging>.lock`, from before the folder exists until after it is gone; the kernel releases the
lock when the process dies, however it dies. Once it holds the lock, the build writes its host's
name in the file. `sweep` (run when a node starts) removes a staging folder only when it can take
that lock itself: a build in progress in any process on this host is never touched.

Locks are reliable between processes of one host, but not between hosts on every network file
system, and a lock file with no host name in it may not be locked yet. So a free lock that names
this host is trusted once `LOCAL_AGE` (a margin) has passed; one that names another host or
none, and a staging folder with no lock file at all (left by a version of jobyard before the
locks), are removed only once `FOREIGN_AGE` has passed, longer than any build.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["FOREIGN_AGE", "LOCAL_AGE", "LOCK_SUFFIX", "PREFIX", "staging_folder", "sweep"]

log = logging.getLogger("jobyard.workspaces.staging")

PREFIX: Final = ".staging-"
LOCK_SUFFIX: Final = ".lock"
LOCAL_AGE: Final = 60.0  # seconds
FOREIGN_AGE: Final = 3600.0  # seconds; a clone times out after 300


@contextlib.contextmanager
def staging_folder(parent: Path, workspace_id: str) -> Iterator[Path]:
    """A fresh path in `parent` to build `workspace_id` in, locked against `sweep` until the
    block ends. The folder is not created: the caller creates it (a copy or a clone does). On
    exit, whatever is still at that path is removed (after a successful build it has been
    renamed away), then the lock file."""
    name = f"{PREFIX}{workspace_id}-{secrets.token_hex(4)}"
    lock = parent / (name + LOCK_SUFFIX)
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, _this_host())  # only once locked, so a free lock naming us is a dead one
        try:
            yield parent / name
        finally:
            try:
                _remove(parent / name)
            except OSError as exc:  # the lock file stays, so a later sweep retries
                log.warning("cannot remove staging folder %s: %s", name, exc)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
    finally:
        os.close(fd)  # releases the lock


def sweep(parent: Path, *, now: float | None = None) -> list[str]:
    """Remove the staging folders in `parent` left by builds that died; returns their names.

    Never raises: a folder it cannot remove is logged and left for the next sweep. `now` (a
    `time.time()` value) is for tests."""
    now = time.time() if now is None else now
    try:
        names = {
            entry.name.removesuffix(LOCK_SUFFIX)
            for entry in os.scandir(parent)
            if entry.name.startswith(PREFIX)
        }
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot look for staging folders left by interrupted builds: %s", exc)
        return []
    swept = []
    for name in sorted(names):
        try:
            if _sweep_one(parent, name, now):
                swept.append(name)
        except OSError as exc:
            log.warning("cannot remove staging folder %s: %s", name, exc)
    if swept:
        log.info("removed %d staging folders left by interrupted builds", len(swept))
    return swept


def _sweep_one(parent: Path, name: str, now: float) -> bool:
    lock = parent / (name + LOCK_SUFFIX)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        # No lock file: judged by age alone. By ctime, as a copy gives the folder its
        # template's mtime.
        try:
            changed = os.lstat(parent / name).st_ctime
        except FileNotFoundError:
            return False  # a build that finished since the listing
        return now - changed >= FOREIGN_AGE and _remove(parent / name)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a build in progress
        wait = LOCAL_AGE if os.read(fd, 256) == _this_host() else FOREIGN_AGE
        if now - os.fstat(fd).st_mtime < wait:
            return False
        removed = _remove(parent / name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
            removed = True
        return removed
    finally:
        os.close(fd)


def _this_host() -> bytes:
    return socket.gethostname().encode()


def _remove(path: Path) -> bool:
    """Remove `path` without following it if it is a link; False if nothing was there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    return True
