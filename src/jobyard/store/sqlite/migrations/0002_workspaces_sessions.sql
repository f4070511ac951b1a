-- Workspaces and sessions, initialized by the workspace_init and session_init jobs.

CREATE TABLE jobyard_workspaces (
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
CREATE INDEX jobyard_workspaces_created ON jobyard_workspaces (created_at);

CREATE TABLE jobyard_sessions (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES jobyard_workspaces (id) ON DELETE CASCADE,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'initializing', 'ready', 'failed')),
    error        TEXT,
    job_id       INTEGER,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE INDEX jobyard_sessions_workspace ON jobyard_sessions (workspace_id, created_at);
