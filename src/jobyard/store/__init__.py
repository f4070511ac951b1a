"""Stores: where jobs live. `open_store(url)` picks the backend from the URL."""

from __future__ import annotations

from typing import Any

from jobyard.config import DEFAULT_DATABASE_URL
from jobyard.model import StoreError
from jobyard.store.ports import Store

__all__ = ["Store", "open_store"]


def open_store(url: str = DEFAULT_DATABASE_URL, **options: Any) -> Store:
    """Open the store that `url` names; connections open and the schema migrates on first use.

    - `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (the default is
      `sqlite:///jobyard.db`). Options: `synchronous` ("FULL" by default, or "NORMAL").
    - `postgresql://user@host:port/dbname` (needs the `postgres` extra). Options: `min_size`,
      `max_size` (the pool), `node_name` (shown in `application_name`), `open_timeout`
      (how long the first use waits for a connection, 30 s by default).

    Both take `auto_migrate=False` to leave the schema to an explicit `await store.migrate()`.
    """
    if url.startswith("sqlite://"):
        from jobyard.store.sqlite.store import SQLiteStore

        path = url.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise StoreError(f"a SQLite URL looks like sqlite:///jobyard.db, got {url!r}")
        path = path[1:]  # sqlite:///rel.db → rel.db, sqlite:////abs.db → /abs.db
        return SQLiteStore(path, **options)
    if url.startswith(("postgresql://", "postgres://")):
        from jobyard.store.postgres.store import PostgresStore

        return PostgresStore(url, **options)
    raise StoreError(f"unknown database URL {url!r}: use sqlite:///path or postgresql://...")
