-- Workspaces and sessions, initialized by the workspace_init and session_init jobs. A database
-- from a version that kept them in the engine's own line (its migration 2) has them already.

CREATE TABLE IF NOT EXISTS jobyard_workspaces (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    template   TEXT,
    status     TEXT NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'initializing', 'ready', 'failed')),
    error      TEXT,
    job_id     INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobyard_workspaces_created ON jobyard_workspaces (created_at);

CREATE TABLE IF NOT EXISTS jobyard_sessions (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES jobyard_workspaces (id) ON DELETE CASCADE,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'initializing', 'ready', 'failed')),
    error        TEXT,
    job_id       INTEGER,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobyard_sessions_workspace ON jobyard_sessions (workspace_id, created_at);
