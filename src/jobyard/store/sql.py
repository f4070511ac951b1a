"""Named queries, read from a backend's `.sql` file.

A query starts with a `-- name: <name>` line; the comment lines after it say what it guarantees.
Keeping SQL in files per dialect lets a reader compare the two backends side by side.
"""

from __future__ import annotations

import re
from importlib.resources import files

__all__ = ["load_queries", "migration_files"]

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(package: str, resource: str) -> dict[str, str]:
    """Return `{name: sql}` for every named query in `package/resource`."""
    text = files(package).joinpath(resource).read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{resource}: query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


def migration_files(package: str) -> list[tuple[int, str, str]]:
    """Every `NNNN_name.sql` in `package`, as `(version, name, sql)` in version order."""
    found = []
    for entry in files(package).iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations in {package} are not numbered 1..n: {versions}")
    return found
