-- jobyard schema, version 1 (PostgreSQL).

CREATE TABLE jobyard_jobs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type         text        NOT NULL,
    payload      jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    priority     integer     NOT NULL DEFAULT 0,
    attempt      integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at       timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    error        text,
    owner        text
) WITH (fillfactor = 80);  -- room for heap-only updates

-- The claim reads this index in order, one type at a time, and stops at LIMIT: its cost does
-- not grow with the backlog or the history.
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
    node_id      text        PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    job_types    text[]      NOT NULL,
    concurrency  integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

-- (Made a logged table by migration 0004: a lease emptied by crash recovery let a follower
-- be elected while the old leader still trusted its term.)
CREATE UNLOGGED TABLE jobyard_leader (
    name       text        PRIMARY KEY,  -- always 'default': one lease per database
    leader_id  text        NOT NULL,
    elected_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
