-- The owner index tempted the planner into scanning a node's running jobs to complete one by
-- id; completion must be a primary-key lookup. The heartbeat's per-node query reads the
-- (few) running jobs through jobyard_jobs_running instead.
DROP INDEX jobyard_jobs_owner;
