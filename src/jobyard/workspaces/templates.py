"""Putting a template's files into a workspace: copied, or cloned when it is a git repository.

A template may come from a third party, so nothing in it is trusted to stay inside the templates
folder:

- Links are copied as links (`shutil.copytree(symlinks=True)`), never followed: a link that
  leads elsewhere arrives in the workspace as a link and nothing it points at is read, while a
  project's relative links between its own files keep working.
- A template with a `.git` entry is cloned only if that `.git` is a real folder inside the
  template, holding no link and borrowing nothing from another repository. A `.git` link or
  `gitdir:` file, `objects/info/alternates` or a worktree's `commondir` would each make git read
  a repository elsewhere on the machine, so such a template is refused, never copied instead.
- The clone is given the template's path only, copies files rather than hard-linking them, may
  use no transport but local files, and runs without the environment variables that would point
  git at another repository. Committed links are checked out as links, as copies keep them.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Final

from jobyard.model import PermanentError

__all__ = ["TemplateRefused", "fill"]

GIT_TIMEOUT: Final = 300.0
# Files in a .git folder that make git read objects or refs from another repository.
_BORROWING: Final = ("commondir", "objects/info/alternates", "objects/info/http-alternates")
# Local files are the only transport a template clone needs; nothing may make it fetch.
_GIT_CONFIG: Final = ("-c", "protocol.allow=never", "-c", "protocol.file.allow=always")
# Variables that would make git use another repository than the one named on its command line.
_GIT_LOCATION_VARS: Final = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
)


class TemplateRefused(PermanentError):
    """The template holds something that could lead a build outside the templates folder or the
    workspace. Retrying cannot help until the template is fixed, so the job fails without using
    up its attempts; fix the template, then retry the job."""


def fill(source: Path, name: str, staging: Path) -> str:
    """Put the files of template `name`, found at `source` (its real path, inside the templates
    folder), in `staging`, which must not exist yet. Returns how: "copy" or "git"."""
    if os.path.lexists(source / ".git"):
        _check_repository(source / ".git", name)
        _clone(source, name, staging)
        return "git"
    shutil.copytree(source, staging, symlinks=True)
    return "copy"


def _check_repository(git_dir: Path, name: str) -> None:
    """Refuse a `.git` that would let the clone read anything outside the template."""
    if not stat.S_ISDIR(os.lstat(git_dir).st_mode):
        raise TemplateRefused(
            f"template {name!r}: its .git is a link or a file (such as a 'gitdir:' pointer), "
            "not a repository folder inside the template; jobyard clones only a real .git folder"
        )
    for borrowing in _BORROWING:
        if os.path.lexists(git_dir / borrowing):
            raise TemplateRefused(
                f"template {name!r}: .git/{borrowing} makes the repository read another "
                "repository's files; jobyard clones only a self-contained repository"
            )
    link = _first_link(git_dir)
    if link is not None:
        raise TemplateRefused(
            f"template {name!r}: .git/{link} is a link; jobyard clones only a repository whose "
            ".git folder holds no links"
        )


def _first_link(top: Path) -> str | None:
    """The path, relative to `top`, of a link somewhere under it, or None."""
    pending = [top]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    return Path(entry.path).relative_to(top).as_posix()
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
    return None


def _clone(source: Path, name: str, staging: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    command = ["git", *_GIT_CONFIG, "clone", "--quiet", "--no-hardlinks", "--"]
    try:
        result = subprocess.run(
            [*command, str(source), str(staging)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"git clone of template {name!r} took longer than {GIT_TIMEOUT:g}s"
        ) from None
    if result.returncode != 0:
        raise RuntimeError(f"git clone of template {name!r} failed: {result.stderr.strip()[:500]}")
