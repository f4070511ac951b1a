"""What the orchestrator knows about each system: how to run its adapter, and the SQL it uses
from its own connection to count committed completions and to seed history.

Completion is always read from the database, never from the worker:
- jobyard: rows of `jobyard_jobs` with status `completed` (`finished_at` set in the same
  statement that records the result);
- PgQueuer: `successful` rows of `pgqueuer_log`, written in the statement that deletes the job
  from `pgqueuer`;
- Procrastinate: rows of `procrastinate_jobs` with status `succeeded`, and the `succeeded` event
  its trigger writes in the same transaction (`procrastinate_events.at`).

`{floor}` is the highest job id before the measured jobs were enqueued (0, or the last id of the
seeded history), so history rows are never counted. `{n}` is the number of history rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
MAIN_PYTHON = ROOT / ".venv" / "bin" / "python"
PEERS_PYTHON = BENCH / ".venv-peers" / "bin" / "python"


@dataclass(frozen=True)
class System:
    name: str
    label: str
    python: Path
    adapter: Path
    backend: str  # "postgres" or "sqlite"
    remaining_sql: str  # true while any measured job is not finished
    done_sql: str  # committed completions with id > {floor}
    last_done_sql: str  # epoch seconds of the last committed completion, id > {floor}
    enqueued_sql: str  # jobs present with id > {floor}, whatever their state
    floor_sql: str
    status_sql: str  # (state, count) rows with id > {floor}, for diagnostics
    seed_sql: list[str] = field(default_factory=list)
    global_limit: bool = True
    notes: str = ""


_JOBYARD_SEED = """
INSERT INTO jobyard_jobs (type, payload, status, priority, attempt, max_attempts, run_at,
                          created_at, started_at, finished_at, owner)
SELECT 'bench', jsonb_build_object('i', g), 'completed', 0, 1, 3,
       now() - interval '2 hours', now() - interval '2 hours', now() - interval '2 hours',
       now() - interval '1 hour', 'history-node'
FROM generate_series(1, {n}) AS g
"""

JOBYARD = System(
    name="jobyard",
    label="jobyard (PostgreSQL)",
    python=MAIN_PYTHON,
    adapter=BENCH / "systems" / "jobyard_bench.py",
    backend="postgres",
    remaining_sql="SELECT EXISTS (SELECT 1 FROM jobyard_jobs "
    "WHERE status IN ('pending', 'processing'))",
    done_sql="SELECT count(*) FROM jobyard_jobs WHERE status = 'completed' AND id > {floor}",
    last_done_sql="SELECT extract(epoch FROM max(finished_at))::float8 FROM jobyard_jobs "
    "WHERE status = 'completed' AND id > {floor}",
    enqueued_sql="SELECT count(*) FROM jobyard_jobs WHERE id > {floor}",
    floor_sql="SELECT coalesce(max(id), 0) FROM jobyard_jobs",
    status_sql="SELECT status, count(*) FROM jobyard_jobs WHERE id > {floor} GROUP BY status",
    seed_sql=[_JOBYARD_SEED],
    notes="defaults except concurrency (and Limits in S5); psycopg 3 pool (max 8)",
)

JOBYARD_SQLITE = System(
    name="jobyard-sqlite",
    label="jobyard (SQLite)",
    python=MAIN_PYTHON,
    adapter=BENCH / "systems" / "jobyard_bench.py",
    backend="sqlite",
    remaining_sql=JOBYARD.remaining_sql,
    done_sql=JOBYARD.done_sql,
    last_done_sql="SELECT max(finished_at) FROM jobyard_jobs "
    "WHERE status = 'completed' AND id > {floor}",
    enqueued_sql=JOBYARD.enqueued_sql,
    floor_sql=JOBYARD.floor_sql,
    status_sql=JOBYARD.status_sql,
    notes="embedded store, synchronous=FULL (the default), WAL",
)

PGQUEUER = System(
    name="pgqueuer",
    label="PgQueuer",
    python=PEERS_PYTHON,
    adapter=BENCH / "systems" / "pgqueuer_bench.py",
    backend="postgres",
    remaining_sql="SELECT EXISTS (SELECT 1 FROM pgqueuer WHERE status IN ('queued', 'picked'))",
    done_sql="SELECT count(*) FROM pgqueuer_log WHERE status = 'successful' AND job_id > {floor}",
    last_done_sql="SELECT extract(epoch FROM max(created))::float8 FROM pgqueuer_log "
    "WHERE status = 'successful' AND job_id > {floor}",
    enqueued_sql="SELECT count(*) FROM pgqueuer WHERE id > {floor}",
    floor_sql="SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pgqueuer_id_seq",
    status_sql="SELECT status::text, count(*) FROM pgqueuer WHERE id > {floor} GROUP BY status",
    seed_sql=[
        # A finished job leaves no row in `pgqueuer`, only its log rows: the history is there.
        "INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated) "
        "SELECT now() - interval '1 hour', g, 'successful', 0, 'bench', true "
        "FROM generate_series(1, {n}) AS g",
        "SELECT setval(pg_get_serial_sequence('pgqueuer', 'id'), {n})",
    ],
    notes="asyncpg driver (one connection, as its README); worker on uvloop as `pgq run`; "
    "batch_size = concurrency / 2, max_concurrent_tasks = concurrency",
)

PROCRASTINATE = System(
    name="procrastinate",
    label="Procrastinate",
    python=PEERS_PYTHON,
    adapter=BENCH / "systems" / "procrastinate_bench.py",
    backend="postgres",
    remaining_sql="SELECT EXISTS (SELECT 1 FROM procrastinate_jobs "
    "WHERE status IN ('todo', 'doing'))",
    done_sql="SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded' AND id > {floor}",
    last_done_sql="SELECT extract(epoch FROM max(at))::float8 FROM procrastinate_events "
    "WHERE type = 'succeeded' AND job_id > {floor}",
    enqueued_sql="SELECT count(*) FROM procrastinate_jobs WHERE id > {floor}",
    floor_sql="SELECT coalesce(max(id), 0) FROM procrastinate_jobs",
    status_sql="SELECT status::text, count(*) FROM procrastinate_jobs WHERE id > {floor} "
    "GROUP BY status",
    seed_sql=[
        "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, args, status, "
        "attempts) SELECT 'bench', 'bench', 0, jsonb_build_object('i', g), 'succeeded', 1 "
        "FROM generate_series(1, {n}) AS g",
    ],
    global_limit=False,
    notes="psycopg 3 connector, pool max_size = concurrency + 2; fetches one job per query",
)

SYSTEMS: dict[str, System] = {s.name: s for s in (JOBYARD, PGQUEUER, PROCRASTINATE, JOBYARD_SQLITE)}
