"""Walks and writes inside a workspace that never follow a symbolic link.

A workspace holds a template's files and whatever its users put there afterwards, so any name
in it may be a link planted to send a write somewhere else on the machine. Everything jobyard
writes inside a workspace (its metadata, a session's state) goes through `folder` and
`write_atomically`: each step opens one name relative to the folder before it, refusing a link
(`O_NOFOLLOW`) or anything that is not a folder, so a write either lands inside the workspace
or does not happen. A link planted at any moment, even after a check, cannot redirect it,
because no path is ever looked up twice.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from jobyard.model import PermanentError

__all__ = ["UnsafePath", "folder", "holds_file", "write_atomically"]

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(PermanentError):
    """A name on the way to something jobyard writes is a link or not a folder. Retrying
    cannot help until someone removes it, so the job fails without using up its attempts."""


@contextlib.contextmanager
def folder(root: Path, parts: Sequence[str] = (), *, create: bool = False) -> Iterator[int]:
    """A file descriptor of the folder `root/parts[0]/parts[1]/...`, for `dir_fd=` calls.

    `root` itself must not be a link (the folders above it are the operator's and are
    followed). Each part must be a real folder; with `create`, missing ones are created.
    Raises UnsafePath, naming the offending part relative to `root`, otherwise."""
    try:
        fd = os.open(root, _FOLDER)
    except OSError as exc:
        raise _unsafe(exc, root.name) from None
    try:
        for depth, part in enumerate(parts):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            try:
                inner = os.open(part, _FOLDER, dir_fd=fd)
            except OSError as exc:
                raise _unsafe(exc, "/".join(parts[: depth + 1])) from None
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _unsafe(exc: OSError, shown: str) -> Exception:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return UnsafePath(
            f"{shown!r} is a link or not a folder; jobyard writes only into real folders "
            "inside the workspace"
        )
    # Any other failure (missing, permission): the same error, naming the relative path only.
    return OSError(exc.errno, exc.strerror, shown)


def write_atomically(dir_fd: int, name: str, data: bytes) -> None:
    """Write `name` in the folder `dir_fd` as a whole: readers see the old file or the new one.

    The new content goes to a fresh file (`O_EXCL | O_NOFOLLOW`) that is then renamed over
    `name`; a rename replaces a link at `name` instead of following it, and never writes into a
    file that is hard-linked from elsewhere."""
    partial = f".{name}.{secrets.token_hex(4)}"
    fd = os.open(partial, _NEW_FILE, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(partial, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial, dir_fd=dir_fd)
        raise


def holds_file(root: Path, parts: Sequence[str]) -> bool:
    """True if `root/parts...` is a regular file reached through real folders only.

    For the "already built?" checks: it only looks (lstat), and a link anywhere on the way makes
    the answer False, so the build goes on and meets the link where it refuses it."""
    path = root
    if not _is(path, stat.S_ISDIR):
        return False
    for part in parts[:-1]:
        path = path / part
        if not _is(path, stat.S_ISDIR):
            return False
    return _is(path / parts[-1], stat.S_ISREG)


def _is(path: Path, kind: Callable[[int], bool]) -> bool:
    try:
        return kind(os.lstat(path).st_mode)
    except OSError:
        return False
