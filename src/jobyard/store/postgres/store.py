"""The PostgreSQL store: many nodes on many hosts share one database.

Connections come from a psycopg 3 pool in autocommit mode: every operation is one statement,
so one implicit transaction, except a migration and creating a workspace or session with its
job. A node's dispatch cycle (record results, claim) is a single statement too, limits included.
Every connection is named `jobyard:<node>:<role>` in `pg_stat_activity`. Code without an event
loop (a Flask or Django view) enqueues through a small sync pool that opens on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from jobyard.model import Job, JobStatus, StoreError, StoreUnavailable
from jobyard.store.backend import StoreBase
from jobyard.store.errors import translate_errors
from jobyard.store.ports import ENGINE_LINE
from jobyard.store.records import (
    CHANNEL_JOBS,
    CHANNEL_LEADER,
    ClaimParams,
    HeartbeatResult,
    JobResult,
    NewJob,
    NodeInfo,
)
from jobyard.store.sql import load_queries, migration_files

try:
    import psycopg
    from psycopg.pq import ExecStatus
    from psycopg_pool import AsyncConnectionPool, ConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the install
    raise StoreError(
        "PostgreSQL support needs the 'postgres' extra: pip install 'jobyard[postgres]'"
    ) from exc

__all__ = ["PostgresStore", "translate_driver_error"]

log = logging.getLogger("jobyard.store.postgres")

_Q: Final = load_queries("jobyard.store.postgres", "queries.sql")
for _name in ("insert_jobs", "insert_job"):
    # The insert plus one NOTIFY in the same statement: sent if and only if the jobs commit.
    _Q[f"{_name}_notify"] = (
        "WITH inserted AS (\n"
        + _Q[_name].rstrip(";")
        + "\n)\nSELECT inserted.* FROM inserted, "
        + f"(SELECT pg_notify('{CHANNEL_JOBS}', %(notify)s)) AS sent"
    )
_MIGRATIONS_PACKAGE: Final = "jobyard.store.postgres.migrations"
# The migrations table: one row per (line, version). A table from a version with a single
# migration line gets its `line` column (its rows are the engine's) and the wider key.
_BOOKKEEPING: Final = (
    "CREATE TABLE IF NOT EXISTS jobyard_migrations (line text NOT NULL DEFAULT 'jobyard',"
    " version integer NOT NULL, name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (line, version))",
    "ALTER TABLE jobyard_migrations ADD COLUMN IF NOT EXISTS line text NOT NULL DEFAULT 'jobyard'",
    """DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_index WHERE indrelid = 'jobyard_migrations'::regclass
                   AND indisprimary AND indnatts = 1) THEN
            ALTER TABLE jobyard_migrations DROP CONSTRAINT jobyard_migrations_pkey;
            ALTER TABLE jobyard_migrations ADD PRIMARY KEY (line, version);
        END IF;
    END $$""",
)
# Session advisory lock held while migrating, so concurrent starts apply each migration once.
_MIGRATION_LOCK: Final = 0x6A6F627961726400  # "jobyard\0"


def type_lock_key(job_type: str) -> int:
    """A stable signed 64-bit advisory-lock key for one job type (same on every host)."""
    digest = hashlib.blake2b(f"jobyard:type:{job_type}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _NotifyLimiter:
    """Debounces enqueue notifications: at most one inline NOTIFY per window; the enqueues
    that fall inside a window are covered by one trailing NOTIFY at its end."""

    def __init__(self, window: float, send: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        self._window = window
        self._send = send
        self._last = -1e9
        self._trailing: set[str] = set()
        self._scheduled = False
        self._task: asyncio.Task[None] | None = None  # keeps the trailing send referenced
        self._handle: asyncio.TimerHandle | None = None

    def claim_inline(self) -> bool:
        """True: send the NOTIFY inside this insert. False: insert without it, then call
        `trail` once the insert has committed."""
        now = time.monotonic()
        if now - self._last >= self._window:
            self._last = now
            return True
        return False

    def trail(self, types: str) -> None:
        """Cover a committed, un-notified insert with the window's trailing NOTIFY: sent after
        the commit, so a woken node always finds the job."""
        self._trailing.update(types.split(","))
        if not self._scheduled:
            self._scheduled = True
            delay = max(0.0, self._last + self._window - time.monotonic())
            self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    async def drain(self) -> None:
        """Send a notification still waiting for its window (the store is closing)."""
        if self._scheduled and self._handle is not None:
            self._handle.cancel()
            self._fire()
        if self._task is not None:
            await self._task

    def _fire(self) -> None:
        types, self._trailing = ",".join(sorted(self._trailing)), set()
        self._scheduled = False
        self._last = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._send(types))


def _inserted(jobs: Sequence[NewJob], rows: Sequence[Sequence[Any]]) -> list[Job]:
    """The jobs an insert created, from what it returned (`id, payload, run_at, created_at`; the
    rest is what was sent). The payload comes back as stored: jsonb normalizes numbers (-0.0 is
    0). The inserts number rows in the caller's order, so ids sort that way too."""
    return [
        Job(
            id=row[0],
            type=job.type,
            payload=row[1],
            status=JobStatus.PENDING,
            priority=job.priority,
            attempt=0,
            max_attempts=job.max_attempts,
            run_at=row[2],
            created_at=row[3],
            started_at=None,
            finished_at=None,
            error=None,
            owner=None,
        )
        for job, row in zip(jobs, sorted(rows, key=lambda r: int(r[0])), strict=True)
    ]


async def _one(cursor: psycopg.AsyncCursor[Any]) -> Any:
    row = await cursor.fetchone()
    if row is None:  # pragma: no cover - an INSERT ... RETURNING always returns its row
        raise StoreError("the database returned no row for an insert")
    return row


def translate_driver_error(exc: BaseException) -> StoreError:
    """A psycopg error as jobyard's: connection problems (refused, lost, pool timeout, server
    shutting down) may pass on a retry; anything else is the database refusing the request."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailable(f"PostgreSQL: {message}")
    return StoreError(f"PostgreSQL: {message}")


@translate_errors((psycopg.Error,), translate_driver_error)
class PostgresStore(StoreBase):
    """A `Store` on PostgreSQL (psycopg 3)."""

    def __init__(
        self,
        url: str,
        *,
        node_name: str = "client",
        role: str = "worker",
        min_size: int = 1,
        max_size: int = 8,
        auto_migrate: bool = True,
        notify: bool = True,
        notify_window: float = 0.005,
        fast_transitions: bool = False,
        open_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self._open_timeout = open_timeout
        self._node_name = node_name
        self._role = role
        self._auto_migrate = auto_migrate
        self._migrated = False
        self._notify_enabled = notify
        self._fast = fast_transitions
        self._limiter = _NotifyLimiter(notify_window, self._send_notify)
        self._notifier: PostgresStore | None = None  # opened by the first trailing NOTIFY
        # Run on every new connection. The first keeps a stuck session from pinning the MVCC
        # horizon for ever.
        self._settings = ["SET idle_in_transaction_session_timeout = '60s'"]
        self._pool_kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": self.application_name(role),
        }
        self._pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs=self._pool_kwargs,
            open=False,
            configure=self._configure,
        )
        self._sync_pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._parent: PostgresStore | None = None

    @property
    def dialect(self) -> str:
        return "postgresql"

    def __repr__(self) -> str:
        return f"PostgresStore({psycopg.conninfo.make_conninfo(self.url, password='***')!r})"

    @property
    def address(self) -> str:
        """`host:port/dbname` of the server, without user or password, for messages."""
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.url)
        except psycopg.Error:
            return "(an unreadable URL)"
        host = str(info.get("host") or "localhost")
        return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"

    async def _why_unreachable(self, within: float = 5.0) -> str | None:
        """The driver's own reason a connection fails (refused, unknown database, bad
        password...), which the pool's timeout does not say; None when it connects."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=max(1, round(within))
            )
        except psycopg.Error as exc:
            return " ".join(str(exc).split()) or type(exc).__name__
        await conn.close()
        return None

    async def check_reachable(self, within: float = 5.0) -> None:
        reason = await self._why_unreachable(within)
        if reason is not None:
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self.address}: {reason}")

    def application_name(self, role: str) -> str:
        """`jobyard:<node>:<role>`, as shown in pg_stat_activity (at most 63 bytes)."""
        # PostgreSQL keeps 63 bytes: shorten the node part so the role always survives.
        suffix = f":{role}".encode()
        node = f"jobyard:{self._node_name}".encode()[: 63 - len(suffix)]
        return (node + suffix).decode("utf-8", errors="ignore")

    def set_node_name(self, node_name: str) -> None:
        """Name this store's connections after the node that uses it; before first use."""
        if self._opened:
            return
        self._node_name = node_name
        self._pool_kwargs["application_name"] = self.application_name(self._role)

    def for_role(self, role: str) -> PostgresStore:
        """A store on its own one-connection pool, named for `role`, for a part of a node that
        must not queue behind the others: the heartbeat and the elector (a busy node must never
        miss its heartbeat and be presumed dead), and the dispatch cycles ("claim", whose
        statements always run a generic plan: the cycle's plan is the same for every call, and
        planning it anew each time cost more than running it)."""
        claim = role == "claim"
        twin = PostgresStore(
            self.url,
            node_name=self._node_name,
            role=role,
            min_size=1,
            max_size=1,
            auto_migrate=False,
            notify=self._notify_enabled,
            fast_transitions=self._fast,
            open_timeout=self._open_timeout,
        )
        if claim:
            twin._settings.append("SET plan_cache_mode = force_generic_plan")
            twin._pool_kwargs["prepare_threshold"] = 0  # prepared, so planned, once
            if self._fast:
                # A claim or a result lost in a database crash only makes a job run again;
                # enqueues, which must never be lost, stay synchronous on the other connections.
                twin._settings.append("SET synchronous_commit = off")
        twin._migrated = True
        twin._parent = self
        return twin

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for statement in self._settings:
            await conn.execute(statement)

    async def _open(self) -> None:
        """Open the pool and migrate once, however many callers race to be first."""
        async with self._open_lock:
            if self._opened:
                return
            if self._parent is not None:
                await self._parent._open()  # the schema is the main store's business
            try:
                await self._pool.open(wait=True, timeout=self._open_timeout)
            except Exception as exc:
                await self._pool.close()  # or it keeps trying in the background
                reason = await self._why_unreachable() or str(exc)
                raise StoreUnavailable(
                    f"cannot connect to PostgreSQL at {self.address}: {reason}"
                ) from exc
            if self._auto_migrate and not self._migrated:
                await asyncio.to_thread(self._migrate_sync)
            self._opened = True

    async def _fetch(self, query: str, params: Any = None) -> list[Any]:
        if not self._opened:
            await self._open()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            # The result's status, not `cursor.description`, which builds a column object
            # per field on every call.
            result = cursor.pgresult
            if result is None or result.status != ExecStatus.TUPLES_OK:
                return []
            return await cursor.fetchall()

    async def _rowcount(self, query: str, params: Mapping[str, Any]) -> int:
        if not self._opened:
            await self._open()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

    # -- for applications with tables of their own -------------------------------------------
    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of the store's pool, in autocommit mode, for an application that keeps
        its own tables in the same database: in `conn.transaction()`, `enqueue(...,
        conn=conn)` makes its rows and its jobs commit together. Errors inside the block are
        the driver's own: translate them with `translate_driver_error`."""
        if not self._opened:
            await self._open()
        async with self._pool.connection() as conn:
            yield conn

    # -- what StoreBase builds on ------------------------------------------------------------
    _queries = _Q

    async def _rows(
        self, name: str, params: Mapping[str, Any], *, write: bool = False, listing: bool = False
    ) -> list[Any]:
        return await self._fetch(_Q[name], params)

    async def _count(self, name: str, params: Mapping[str, Any]) -> int:
        return await self._rowcount(_Q[name], params)

    def _time(self, value: datetime | None) -> datetime | None:
        return value  # None: the statement's coalesce(..., now()) reads the server's clock

    def _list(self, values: Sequence[str]) -> list[str]:
        return list(values)

    def _moment(self, value: datetime) -> datetime:
        return value

    def _payload(self, value: Any) -> Any:
        return value  # jsonb, decoded by psycopg

    def _types(self, value: list[str]) -> tuple[str, ...]:
        return tuple(value)

    async def _requeued(self, job: Job) -> None:
        if self._notify_enabled:
            await self._send_notify(job.type)  # like an enqueue: wake the nodes that serve it

    # -- schema ----------------------------------------------------------------------------
    async def migrate(self) -> int:
        # Migrations are rare and short: one sync implementation serves both surfaces.
        return await asyncio.to_thread(self._migrate_sync)

    async def migrate_line(self, line: str, package: str) -> int:
        if self._auto_migrate and not self._migrated:
            await asyncio.to_thread(self._migrate_sync)  # the engine's own line first
        return await asyncio.to_thread(self._migrate_line, line, package)

    def _migrate_sync(self) -> int:
        if self._migrated:
            return len(migration_files(_MIGRATIONS_PACKAGE))
        version = self._migrate_line(ENGINE_LINE, _MIGRATIONS_PACKAGE)
        self._migrated = True
        return version

    def _migrate_line(self, line: str, package: str) -> int:
        """Apply one line's missing migrations under a session advisory lock, each in its own
        transaction; returns the line's version."""
        known = migration_files(package)
        with psycopg.connect(
            self.url, autocommit=True, application_name=self.application_name("migrate")
        ) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                with conn.transaction():
                    for statement in _BOOKKEEPING:
                        conn.execute(statement)
                row = conn.execute(
                    "SELECT coalesce(max(version), 0) FROM jobyard_migrations WHERE line = %s",
                    (line,),
                )
                (version,) = row.fetchone() or (0,)
                if version > len(known):
                    raise StoreError(
                        f"the database's {line} schema is version {version}, newer than this "
                        f"jobyard knows ({len(known)}); upgrade jobyard"
                    )
                for number, name, script in known[version:]:
                    with conn.transaction():
                        conn.execute(script.encode())
                        conn.execute(
                            "INSERT INTO jobyard_migrations (line, version, name)"
                            " VALUES (%s, %s, %s)",
                            (line, number, name),
                        )
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        return len(known)

    async def close(self) -> None:
        await self._limiter.drain()
        if self._notifier is not None:
            await self._notifier.close()
        await self._pool.close()
        if self._sync_pool is not None:
            self._sync_pool.close()

    async def now(self) -> datetime:
        rows = await self._fetch("SELECT now()")
        value: datetime = rows[0][0]
        return value

    # -- jobs ------------------------------------------------------------------------------
    @staticmethod
    def _insert(jobs: Sequence[NewJob], notify: bool) -> tuple[str, dict[str, Any]]:
        """The insert statement for `jobs` (one row or many) and its parameters."""
        types = ",".join(sorted({j.type for j in jobs}))
        if len(jobs) == 1:
            (job,) = jobs
            name = "insert_job"
            params: dict[str, Any] = {
                "type": job.type,
                "payload": job.payload_json,
                "priority": job.priority,
                "max_attempts": job.max_attempts,
                "run_at": job.run_at,
            }
        else:
            name = "insert_jobs"
            params = {
                "types": [j.type for j in jobs],
                "payloads": [j.payload_json for j in jobs],
                "priorities": [j.priority for j in jobs],
                "max_attempts": [j.max_attempts for j in jobs],
                "run_ats": [j.run_at for j in jobs],
            }
        params["now"] = None
        params["notify"] = types
        return _Q[f"{name}_notify" if notify else name], params

    async def _send_notify(self, types: str) -> None:
        # On a connection of its own: sent from a timer, it would otherwise run beside an
        # enqueue and grow the pool, and the pool hands its idle connections out in turn, so a
        # lone producer would then pay for a cold server process on every other call.
        if self._notifier is None:
            self._notifier = self.for_role("notify")
        try:
            await self._notifier._fetch("SELECT pg_notify(%s, %s)", (CHANNEL_JOBS, types))
        except Exception:
            log.warning(
                "sending a trailing job notification failed; nodes will poll", exc_info=True
            )

    async def notify_jobs(self) -> None:
        if self._notify_enabled:
            await self._send_notify("")

    async def notify_leader_change(self) -> None:
        """Tell followers the lease is free, so one takes over now rather than at its next
        election tick."""
        if self._notify_enabled:
            await self._fetch("SELECT pg_notify(%s, '')", (CHANNEL_LEADER,))

    async def watch(
        self, on_event: Callable[[str, str], None], *, probe_every: float = 5.0
    ) -> None:
        """LISTEN for enqueue and leadership notifications until cancelled.

        `on_event(channel, payload)` runs on every notification, and with channel "" after
        every (re)connect, since anything sent while the listener was down was lost. The
        connection is probed every `probe_every` seconds; one that died or hangs is replaced.
        """
        delay = 0.1
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    application_name=self.application_name("listener"),
                    connect_timeout=10,
                )
                await conn.execute(f"LISTEN {CHANNEL_JOBS}")
                await conn.execute(f"LISTEN {CHANNEL_LEADER}")
                on_event("", "")
                delay = 0.1
                while True:
                    async for note in conn.notifies(timeout=probe_every):
                        on_event(note.channel, note.payload)
                        # Let what on_event woke (a dispatcher's claim) run before this
                        # connection is watched again.
                        await asyncio.sleep(0)
                    await asyncio.wait_for(conn.execute("SELECT 1"), probe_every)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listener connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def enqueue_jobs(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        if not jobs:
            return []
        if conn is None:
            # The NOTIFY rides in the insert's own statement, so it is sent if and only if the
            # jobs commit. Within the debounce window it is left out and one trailing NOTIFY
            # follows instead: many enqueues, few notifications, no wake-up later than the window.
            inline = self._notify_enabled and self._limiter.claim_inline()
            query, params = self._insert(jobs, inline)
            rows = await self._fetch(query, params)
            if self._notify_enabled and not inline:
                self._limiter.trail(params["notify"])
        else:
            if not isinstance(conn, psycopg.AsyncConnection):
                raise StoreError(
                    "async enqueue joins a psycopg.AsyncConnection's transaction; "
                    "use enqueue_sync for a psycopg.Connection"
                )
            if not self._opened:
                await self._open()
            cursor = await conn.execute(*self._insert(jobs, self._notify_enabled))
            rows = await cursor.fetchall()
        return _inserted(jobs, rows)

    def enqueue_jobs_sync(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[Job]:
        if not jobs:
            return []
        if self._auto_migrate and not self._migrated:
            self._migrate_sync()
        if conn is None:
            with self._sync_connection() as own:
                rows = own.execute(*self._insert(jobs, self._notify_enabled)).fetchall()
        else:
            if not isinstance(conn, psycopg.Connection):
                raise StoreError(
                    "enqueue_sync joins a psycopg.Connection's transaction; "
                    "await enqueue for a psycopg.AsyncConnection"
                )
            rows = conn.execute(*self._insert(jobs, self._notify_enabled)).fetchall()
        return _inserted(jobs, rows)

    def _sync_connection(self) -> Any:
        if self._sync_pool is None:
            self._sync_pool = ConnectionPool(
                self.url,
                min_size=0,
                max_size=4,
                kwargs={"autocommit": True, "application_name": self.application_name("sync")},
                open=True,
            )
        return self._sync_pool.connection()

    async def claim_jobs(self, params: ClaimParams) -> list[Job]:
        _, jobs = await self.complete_and_claim((), params)
        return jobs

    async def complete_and_claim(
        self, results: Sequence[JobResult], params: ClaimParams
    ) -> tuple[set[int], list[Job]]:
        wants = params.max_jobs > 0 and bool(params.job_types)
        if not results and not wants:
            return set(), []
        if not self._opened:
            await self._open()
        types = list(params.job_types) if wants else []
        limits = [params.limits.get(t) for t in types]
        claim = {
            "types": types,
            "limits": limits,
            "max_jobs": params.max_jobs if wants else 0,
            "owner": params.node_id,
            "now": params.now,
            "rows": self._rows_json(results),
            "keys": [
                type_lock_key(t) for t, lim in zip(types, limits, strict=True) if lim is not None
            ],
        }
        # One statement, so one implicit transaction, one round trip and one commit for the
        # whole cycle; the limited types' locks are taken inside it (jobyard_claim_room). With
        # nothing to record and no limit to keep, the lean claim_jobs does the same claim.
        lean = not results and not claim["keys"]
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_Q["claim_jobs" if lean else "complete_and_claim"], claim)
            rows = await cursor.fetchall()
        if lean:
            applied: set[int] = set()
            jobs = [self._job(r) for r in rows]
        else:
            applied = set(rows[0][0]) if rows else set()
            jobs = [self._job(r[1:]) for r in rows if r[1] is not None]
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return applied, jobs

    @staticmethod
    def _rows_json(results: Sequence[JobResult]) -> str:
        return json.dumps(
            [
                {
                    "id": r.job_id,
                    "attempt": r.attempt,
                    "owner": r.owner,
                    "outcome": r.outcome.value,
                    "error": r.error,
                    "retry_delay": r.retry_delay,
                }
                for r in results
            ]
        )

    async def complete_jobs(
        self, results: Sequence[JobResult], *, now: datetime | None = None
    ) -> set[int]:
        # The cycle's statement with nothing to claim: one fenced update, one definition.
        applied, _ = await self.complete_and_claim(
            results, ClaimParams(node_id="", job_types=(), max_jobs=0, now=now)
        )
        return applied

    # -- nodes -----------------------------------------------------------------------------
    async def heartbeat_node(
        self, node: NodeInfo, lease: timedelta, *, now: datetime | None = None
    ) -> HeartbeatResult:
        params = {
            "node_id": node.node_id,
            "hostname": node.hostname,
            "pid": node.pid,
            "job_types": list(node.job_types),
            "concurrency": node.concurrency,
            "now": now,
            "lease": lease.total_seconds(),
        }
        if not self._opened:
            await self._open()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_Q["heartbeat_node"], params)
            row = await cursor.fetchone()
            cursor = await conn.execute(_Q["owned_jobs"], {"node_id": node.node_id})
            owned = await cursor.fetchall()
        return HeartbeatResult(
            existed=bool(row and row[0]), owned=frozenset((i, a) for i, a in owned)
        )
