"""The SQLite store: jobyard's embedded default.

One connection per store, used only from one dedicated thread, so the event loop never blocks
on disk and SQLite never sees two threads on a connection. Listings and counts (the dashboard's,
the API's) read on a second, read-only connection and thread of their own, so a count over
millions of retained jobs never holds up a claim. Every write is one `BEGIN IMMEDIATE`
transaction: SQLite's single writer lock then serializes it against every other process that
shares the file, which is what makes the per-type limits and the leader lease hold across
processes. WAL lets readers go on while one process writes.

Durability: `synchronous=FULL` by default, so an acknowledged enqueue survives a power cut.
`synchronous="NORMAL"` is a documented opt-in that may lose the last commits on power loss
(never on a process crash) in exchange for speed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from jobyard.model import Job, StoreError, StoreUnavailable
from jobyard.store.backend import StoreBase
from jobyard.store.errors import translate_errors
from jobyard.store.ports import ENGINE_LINE
from jobyard.store.records import (
    CHANNEL_LEADER,
    ClaimParams,
    HeartbeatResult,
    JobResult,
    NewJob,
    NodeInfo,
)
from jobyard.store.sql import load_queries, migration_files

__all__ = ["SQLiteStore", "translate_driver_error"]

T = TypeVar("T")

_Q: Final = load_queries("jobyard.store.sqlite", "queries.sql")
_MIGRATIONS_PACKAGE: Final = "jobyard.store.sqlite.migrations"
_SYNCHRONOUS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")


def _ts(value: datetime | None) -> float:
    """Epoch seconds for `value`, or the host clock (the database clock on SQLite)."""
    return time.time() if value is None else value.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _data_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return int(version)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return found is not None


def _line_version(conn: sqlite3.Connection, line: str) -> int:
    if not _has_table(conn, "jobyard_migrations"):
        return 0
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobyard_migrations)")}
    if "line" not in columns:  # the bookkeeping of a version that had a single line
        return (
            int(
                conn.execute("SELECT coalesce(max(version), 0) FROM jobyard_migrations").fetchone()[
                    0
                ]
            )
            if line == ENGINE_LINE
            else 0
        )
    (version,) = conn.execute(
        "SELECT coalesce(max(version), 0) FROM jobyard_migrations WHERE line = ?", (line,)
    ).fetchone()
    return int(version)


def _bookkeeping(conn: sqlite3.Connection) -> None:
    """Create the migrations table, or bring one from a version with a single migration line
    to one row per (line, version); inside the caller's write transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS jobyard_migrations (line TEXT NOT NULL DEFAULT 'jobyard',"
        " version INTEGER NOT NULL, name TEXT NOT NULL, applied_at REAL NOT NULL,"
        " PRIMARY KEY (line, version))"
    )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobyard_migrations)")}
    if "line" in columns:
        return
    conn.execute(
        "CREATE TABLE jobyard_migrations_lines (line TEXT NOT NULL DEFAULT 'jobyard',"
        " version INTEGER NOT NULL, name TEXT NOT NULL, applied_at REAL NOT NULL,"
        " PRIMARY KEY (line, version))"
    )
    conn.execute(
        "INSERT INTO jobyard_migrations_lines (line, version, name, applied_at)"
        " SELECT 'jobyard', version, name, applied_at FROM jobyard_migrations"
    )
    conn.execute("DROP TABLE jobyard_migrations")
    conn.execute("ALTER TABLE jobyard_migrations_lines RENAME TO jobyard_migrations")


def _split_statements(script: str) -> list[str]:
    """Split a migration into statements, so they can run inside our own transaction
    (`executescript` would commit first)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()
    ):
        raise StoreError("a migration ends with an incomplete statement")
    return statements


# Operational errors that say the file is busy or unreachable, not that the request was wrong.
_UNAVAILABLE: Final = ("locked", "busy", "unable to open", "disk i/o")


def translate_driver_error(exc: BaseException) -> StoreError:
    """A sqlite3 error as jobyard's: busy or unreachable files may work on a retry."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and any(w in text.lower() for w in _UNAVAILABLE):
        return StoreUnavailable(f"SQLite: {text}")
    return StoreError(f"SQLite: {text}")


@translate_errors((sqlite3.Error,), translate_driver_error)
class SQLiteStore(StoreBase):
    """A `Store` on one SQLite file. Several processes may share the file."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        auto_migrate: bool = True,
        fast_transitions: bool = False,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise StoreError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self.path = str(path)
        self._synchronous = synchronous.upper()
        # Only worth it (and only meaningful) when commits wait for the disk by default.
        self._fast = fast_transitions and self._synchronous in ("FULL", "EXTRA")
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._auto_migrate = auto_migrate
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jobyard-sqlite")
        self._thread_id: int | None = None
        self._conn: sqlite3.Connection | None = None
        # Listings and counts: their own read-only connection on their own thread, opened on
        # first use (never for an in-memory database, which a second connection cannot see).
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="jobyard-sqlite-read")
        self._read_conn: sqlite3.Connection | None = None
        self._migrated = False
        self._closed = False

    @property
    def dialect(self) -> str:
        return "sqlite"

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- plumbing --------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        """The store's connection; runs only on the store thread."""
        if self._conn is None:
            if self._closed:
                raise StoreError("the store is closed")
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
            self._thread_id = threading.get_ident()
            if self._auto_migrate:
                self._migrate(conn)
        return self._conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only `fn` on the reader thread: WAL lets it read the last commit while the
        store thread writes, so long listings never delay claims and results."""
        if self.path == ":memory:":
            return await self._run(fn)
        if self._conn is None or (self._auto_migrate and not self._migrated):
            await self._run(lambda _: None)  # the file and its schema first, by the store thread
        future = self._reader.submit(lambda: fn(self._reading()))
        return await asyncio.wrap_future(future)

    def _reading(self) -> sqlite3.Connection:
        """The read-only connection; runs only on the reader thread."""
        if self._read_conn is None:
            if self._closed:
                raise StoreError("the store is closed")
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            conn.execute("PRAGMA query_only = ON")
            self._read_conn = conn
        return self._read_conn

    def _close_reader(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the store thread and wait: the sync surface."""
        if threading.get_ident() == self._thread_id:
            return fn(self._connection())
        return self._executor.submit(lambda: fn(self._connection())).result()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the store thread without blocking the event loop."""
        future = self._executor.submit(lambda: fn(self._connection()))
        return await asyncio.wrap_future(future)

    @staticmethod
    def _write(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one BEGIN IMMEDIATE transaction."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _transition(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`_write` for claims and results: with fast transitions, committed without waiting
        for the disk (synchronous=NORMAL for this transaction only). A power cut may undo the
        last of them, which only makes those jobs run again; the next durable commit (an
        enqueue) syncs them too, since the WAL is written in order."""
        if not self._fast:
            return self._write(conn, fn)
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            return self._write(conn, fn)
        finally:
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")

    async def check_reachable(self, within: float = 5.0) -> None:
        return None  # the file and its folder are created on first use

    # -- for applications with tables of their own -------------------------------------------
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` in one write transaction (`BEGIN IMMEDIATE`) on the store's own
        connection and thread, and commit it; an exception rolls it back. For an application
        that keeps its own tables in the same file: `enqueue_sync(..., conn=connection)` inside
        `fn` makes its rows and its jobs commit together. `fn` must be quick and never wait on
        the event loop: claims and results queue behind it."""
        return await self._run(lambda c: self._write(c, fn))

    async def read(self, fn: Callable[[sqlite3.Connection], T], *, listing: bool = False) -> T:
        """Run the read-only `fn(connection)`: on the store's thread, or with `listing` on its
        read-only connection, where a long read never holds up claims."""
        if listing:
            return await self._read(fn)
        return await self._run(fn)

    # -- what StoreBase builds on ------------------------------------------------------------
    _queries = _Q

    async def _rows(
        self, name: str, params: Mapping[str, Any], *, write: bool = False, listing: bool = False
    ) -> list[Any]:
        query = _Q[name]
        if listing:
            return await self._read(lambda c: c.execute(query, params).fetchall())
        if write:
            return await self._run(
                lambda c: self._write(c, lambda w: w.execute(query, params).fetchall())
            )
        return await self._run(lambda c: c.execute(query, params).fetchall())

    async def _count(self, name: str, params: Mapping[str, Any]) -> int:
        query = _Q[name]
        return await self._run(
            lambda c: self._write(c, lambda w: w.execute(query, params).rowcount)
        )

    def _time(self, value: datetime | None) -> float:
        return _ts(value)

    def _list(self, values: Sequence[str]) -> str:
        return json.dumps(list(values))

    def _moment(self, value: float) -> datetime:
        return _dt(value)

    def _payload(self, value: str) -> Any:
        return json.loads(value)

    def _types(self, value: str) -> tuple[str, ...]:
        return tuple(json.loads(value))

    # -- schema ----------------------------------------------------------------------------
    def _migrate(self, conn: sqlite3.Connection) -> int:
        version = self._migrate_line(conn, ENGINE_LINE, _MIGRATIONS_PACKAGE)
        self._migrated = True
        return version

    def _migrate_line(self, conn: sqlite3.Connection, line: str, package: str) -> int:
        """Apply the missing migrations of one line, all in one write transaction."""
        known = migration_files(package)
        # A lock-free look first: an up-to-date schema needs no write lock, so opening a store
        # never waits behind another connection's open write transaction.
        if _has_table(conn, "jobyard_migrations") and _line_version(conn, line) == len(known):
            return len(known)

        def apply(c: sqlite3.Connection) -> int:
            _bookkeeping(c)
            version = _line_version(c, line)
            if version > len(known):
                raise StoreError(
                    f"the database's {line} schema is version {version}, newer than this "
                    f"jobyard knows ({len(known)}); upgrade jobyard"
                )
            for number, name, script in known[version:]:
                for statement in _split_statements(script):
                    c.execute(statement)
                c.execute(
                    "INSERT INTO jobyard_migrations (line, version, name, applied_at)"
                    " VALUES (?, ?, ?, ?)",
                    (line, number, name, time.time()),
                )
            return len(known)

        return self._write(conn, apply)

    async def migrate(self) -> int:
        return await self._run(self._migrate)

    async def migrate_line(self, line: str, package: str) -> int:
        if not self._migrated and self._auto_migrate:
            await self._run(lambda _: None)  # the engine's own line first
        return await self._run(lambda c: self._migrate_line(c, line, package))

    async def close(self) -> None:
        if not self._closed:
            await asyncio.wrap_future(self._reader.submit(self._close_reader))
            self._reader.shutdown(wait=True)
            await asyncio.wrap_future(self._executor.submit(self._close))
            self._executor.shutdown(wait=True)

    def close_sync(self) -> None:
        if not self._closed:
            self._reader.submit(self._close_reader).result()
            self._reader.shutdown(wait=True)
            self._executor.submit(self._close).result()
            self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._closed = True

    async def now(self) -> datetime:
        return datetime.now(UTC)

    def for_role(self, role: str) -> SQLiteStore:
        # One writer at a time whatever we do; a second connection would only contend.
        return self

    async def watch(self, on_event: Callable[[str, str], None], *, every: float = 0.025) -> None:
        """Report commits by other connections (other processes) to the file.

        `PRAGMA data_version` changes when another connection commits; reading it takes no
        lock, so checking every 25 ms is cheap, and a node in another process is woken within
        about that. Our own commits do not change it: our own enqueues wake us directly. When
        it changes and the leader lease is free (the leader resigned), that is reported too,
        so a follower takes over at once.
        """
        version = await self._run(_data_version)
        while True:
            await asyncio.sleep(every)
            current = await self._run(_data_version)
            if current != version:
                version = current
                on_event("", "")
                if await self.get_leader() is None:
                    on_event(CHANNEL_LEADER, "")

    # -- jobs ------------------------------------------------------------------------------
    def _insert(self, conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[Job]:
        rows = json.dumps(
            [
                [
                    j.type,
                    j.payload_json,
                    j.priority,
                    j.max_attempts,
                    None if j.run_at is None else j.run_at.timestamp(),
                ]
                for j in jobs
            ]
        )
        cursor = conn.execute(_Q["insert_jobs"], {"rows": rows, "now": time.time()})
        return sorted((self._job(r) for r in cursor.fetchall()), key=lambda job: job.id)

    async def enqueue_jobs(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        if not jobs:
            return []
        if conn is not None:
            return self.enqueue_jobs_sync(jobs, conn=conn)
        return await self._run(lambda c: self._write(c, lambda w: self._insert(w, jobs)))

    def enqueue_jobs_sync(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        if not jobs:
            return []
        if conn is None:
            return self._call(lambda c: self._write(c, lambda w: self._insert(w, jobs)))
        if not isinstance(conn, sqlite3.Connection):
            raise StoreError(
                f"the SQLite store joins a sqlite3.Connection's transaction, not {type(conn)!r}"
            )
        if not self._migrated:
            self._call(lambda c: None)  # opens, and migrates, the schema first
        # The caller's connection, the caller's transaction: Python's sqlite3 opens one before
        # the INSERT unless the caller chose autocommit, and the job lives or dies with it.
        return self._insert(conn, jobs)

    async def claim_jobs(self, params: ClaimParams) -> list[Job]:
        if params.max_jobs <= 0 or not params.job_types:
            return []
        return await self._run(lambda c: self._claim_if_due(c, params))

    def _claim_if_due(self, conn: sqlite3.Connection, params: ClaimParams) -> list[Job]:
        probe = {"types": json.dumps(list(params.job_types)), "now": _ts(params.now)}
        if conn.execute(_Q["any_due"], probe).fetchone() is None:
            return []
        return self._transition(conn, lambda w: self._claim(w, params))

    def _claim(
        self, conn: sqlite3.Connection, params: ClaimParams, skip: AbstractSet[int] = frozenset()
    ) -> list[Job]:
        now = _ts(params.now)
        room: dict[str, int] = {t: params.max_jobs for t in params.job_types}
        limited = [t for t in params.job_types if t in params.limits]
        if limited:
            running = dict(conn.execute(_Q["count_running"], {"types": json.dumps(limited)}))
            for job_type in limited:
                room[job_type] = min(
                    params.max_jobs, params.limits[job_type] - running.get(job_type, 0)
                )
        candidates: list[tuple[int, float, int]] = []
        for job_type, n in room.items():
            if n > 0:
                cursor = conn.execute(
                    _Q["claim_candidates"], {"type": job_type, "now": now, "limit": n + len(skip)}
                )
                found = [(-pri, run_at, id_) for id_, pri, run_at in cursor if id_ not in skip]
                candidates.extend(found[:n])
        if not candidates:
            return []
        candidates.sort()
        ids = [c[2] for c in candidates[: params.max_jobs]]
        cursor = conn.execute(
            _Q["claim_jobs"], {"ids": json.dumps(ids), "owner": params.node_id, "now": now}
        )
        jobs = [self._job(r) for r in cursor.fetchall()]
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return jobs

    async def complete_jobs(
        self, results: Sequence[JobResult], *, now: datetime | None = None
    ) -> set[int]:
        if not results:
            return set()
        return await self._run(
            lambda c: self._transition(c, lambda w: self._complete(w, results, now))
        )

    @staticmethod
    def _complete(
        conn: sqlite3.Connection, results: Sequence[JobResult], now: datetime | None
    ) -> set[int]:
        rows = json.dumps(
            [
                [r.job_id, r.attempt, r.owner, r.outcome.value, r.error, r.retry_delay]
                for r in results
            ]
        )
        params = {"rows": rows, "now": _ts(now)}
        return {row[0] for row in conn.execute(_Q["complete_jobs"], params)}

    async def complete_and_claim(
        self, results: Sequence[JobResult], params: ClaimParams
    ) -> tuple[set[int], list[Job]]:
        if not results:
            return set(), await self.claim_jobs(params)
        wants = params.max_jobs > 0 and bool(params.job_types)

        def cycle(conn: sqlite3.Connection) -> tuple[set[int], list[Job]]:
            applied = self._complete(conn, results, params.now)
            # As on PostgreSQL, where the cycle is one statement with one snapshot: a job
            # whose result was just recorded is not claimed again in the same cycle.
            return applied, self._claim(conn, params, skip=applied) if wants else []

        # One write transaction, so one commit, for both halves.
        return await self._run(lambda c: self._transition(c, cycle))

    # -- nodes -----------------------------------------------------------------------------
    async def heartbeat_node(
        self, node: NodeInfo, lease: timedelta, *, now: datetime | None = None
    ) -> HeartbeatResult:
        params = {
            "node_id": node.node_id,
            "hostname": node.hostname,
            "pid": node.pid,
            "job_types": json.dumps(list(node.job_types)),
            "concurrency": node.concurrency,
            "now": _ts(now),
            "lease": lease.total_seconds(),
        }

        def beat(conn: sqlite3.Connection) -> HeartbeatResult:
            existed = conn.execute(_Q["renew_node"], params).rowcount == 1
            if not existed:
                conn.execute(_Q["insert_node"], params)
            owned = conn.execute(_Q["owned_jobs"], {"node_id": node.node_id}).fetchall()
            return HeartbeatResult(existed=existed, owned=frozenset((i, a) for i, a in owned))

        return await self._run(lambda c: self._transition(c, beat))
