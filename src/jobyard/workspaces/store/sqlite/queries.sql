-- Workspaces and sessions on SQLite. Times are epoch seconds, passed in as :now (SQLite's
-- own clock has no sub-second precision in the version bundled with Python 3.11).

-- name: insert_workspace
INSERT INTO jobyard_workspaces (id, name, template, job_id, created_at, updated_at)
VALUES (:id, :name, :template, :job_id, :now, :now)
RETURNING *;

-- name: insert_session
-- Only into an existing workspace: no row comes back otherwise, and the caller rolls back.
INSERT INTO jobyard_sessions (id, workspace_id, job_id, created_at, updated_at)
SELECT :id, :workspace_id, :job_id, :now, :now
WHERE EXISTS (SELECT 1 FROM jobyard_workspaces WHERE id = :workspace_id)
RETURNING *;

-- name: get_workspace
SELECT * FROM jobyard_workspaces WHERE id = :id;

-- name: get_session
SELECT * FROM jobyard_sessions WHERE id = :id;

-- name: list_workspaces
SELECT * FROM jobyard_workspaces ORDER BY created_at DESC, id DESC LIMIT :limit;

-- name: list_sessions
SELECT * FROM jobyard_sessions
WHERE (:workspace_id IS NULL OR workspace_id = :workspace_id)
ORDER BY created_at DESC, id DESC LIMIT :limit;

-- name: set_workspace_status
-- Compare-and-set: only from one of the expected states.
UPDATE jobyard_workspaces SET status = :status, error = :error, updated_at = :now
WHERE id = :id AND status IN (SELECT value FROM json_each(:expect))
RETURNING *;

-- name: set_session_status
-- Compare-and-set: only from one of the expected states.
UPDATE jobyard_sessions SET status = :status, error = :error, updated_at = :now
WHERE id = :id AND status IN (SELECT value FROM json_each(:expect))
RETURNING *;
