-- jobyard schema, version 1 (SQLite). Times are Unix epoch seconds (REAL).

CREATE TABLE jobyard_jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused
    type         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    priority     INTEGER NOT NULL DEFAULT 0,
    attempt      INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at       REAL    NOT NULL,
    created_at   REAL    NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    error        TEXT,
    owner        TEXT
);

-- The claim reads this index in order and stops at LIMIT: its cost does not grow with history.
CREATE INDEX jobyard_jobs_claim ON jobyard_jobs (type, priority DESC, run_at, id)
    WHERE status = 'pending';
-- Counting running jobs per type (limits) and finding stale ones.
CREATE INDEX jobyard_jobs_running ON jobyard_jobs (type, started_at) WHERE status = 'processing';
-- A node's own running jobs (heartbeat) and orphan rescue.
CREATE INDEX jobyard_jobs_owner ON jobyard_jobs (owner) WHERE status = 'processing';
-- Listing by state, newest first.
CREATE INDEX jobyard_jobs_status ON jobyard_jobs (status, id);
-- Pruning finished jobs by age.
CREATE INDEX jobyard_jobs_finished ON jobyard_jobs (status, finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TABLE jobyard_nodes (
    node_id      TEXT    PRIMARY KEY,
    hostname     TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    job_types    TEXT    NOT NULL,  -- JSON array
    concurrency  INTEGER NOT NULL,
    started_at   REAL    NOT NULL,
    heartbeat_at REAL    NOT NULL,
    expires_at   REAL    NOT NULL
);

CREATE TABLE jobyard_leader (
    name       TEXT PRIMARY KEY,  -- always 'default': one lease per database
    leader_id  TEXT NOT NULL,
    elected_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
