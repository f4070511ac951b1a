-- Workspaces and sessions on PostgreSQL. Rows are stamped with the server's now().

-- name: insert_workspace
INSERT INTO jobyard_workspaces (id, name, template, job_id)
VALUES (%(id)s, %(name)s, %(template)s, %(job_id)s)
RETURNING id, name, template, status, error, job_id, created_at, updated_at;

-- name: insert_session
-- Only into an existing workspace: no row comes back otherwise, and the caller rolls back.
INSERT INTO jobyard_sessions (id, workspace_id, job_id)
SELECT %(id)s, %(workspace_id)s, %(job_id)s
WHERE EXISTS (SELECT 1 FROM jobyard_workspaces WHERE id = %(workspace_id)s)
RETURNING id, workspace_id, status, error, job_id, created_at, updated_at;

-- name: get_workspace
SELECT id, name, template, status, error, job_id, created_at, updated_at
FROM jobyard_workspaces WHERE id = %(id)s;

-- name: get_session
SELECT id, workspace_id, status, error, job_id, created_at, updated_at
FROM jobyard_sessions WHERE id = %(id)s;

-- name: list_workspaces
SELECT id, name, template, status, error, job_id, created_at, updated_at
FROM jobyard_workspaces ORDER BY created_at DESC, id DESC LIMIT %(limit)s;

-- name: list_sessions
SELECT id, workspace_id, status, error, job_id, created_at, updated_at
FROM jobyard_sessions
WHERE (%(workspace_id)s::text IS NULL OR workspace_id = %(workspace_id)s::text)
ORDER BY created_at DESC, id DESC LIMIT %(limit)s;

-- name: set_workspace_status
-- Compare-and-set: only from one of the expected states.
UPDATE jobyard_workspaces SET status = %(status)s, error = %(error)s, updated_at = now()
WHERE id = %(id)s AND status = ANY(%(expect)s::text[])
RETURNING id, name, template, status, error, job_id, created_at, updated_at;

-- name: set_session_status
-- Compare-and-set: only from one of the expected states.
UPDATE jobyard_sessions SET status = %(status)s, error = %(error)s, updated_at = now()
WHERE id = %(id)s AND status = ANY(%(expect)s::text[])
RETURNING id, workspace_id, status, error, job_id, created_at, updated_at;
