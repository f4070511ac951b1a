-- Workspaces and sessions, initialized by the workspace_init and session_init jobs. A database
-- from a version that kept them in the engine's own line (its migration 2) has them already.

CREATE TABLE IF NOT EXISTS jobyard_workspaces (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    template   text,
    status     text        NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'initializing', 'ready', 'failed')),
    error      text,
    job_id     bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS jobyard_workspaces_created ON jobyard_workspaces (created_at);

CREATE TABLE IF NOT EXISTS jobyard_sessions (
    id           text        PRIMARY KEY,
    workspace_id text        NOT NULL REFERENCES jobyard_workspaces (id) ON DELETE CASCADE,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'initializing', 'ready', 'failed')),
    error        text,
    job_id       bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS jobyard_sessions_workspace ON jobyard_sessions (workspace_id, created_at);
