-- The pgbench baseline's starting backlog: 20,000 pending jobs of type 'bench', as jobyard's
-- bulk enqueue would leave them (defaults for every other column).
INSERT INTO jobyard_jobs (type, payload)
SELECT 'bench', jsonb_build_object('i', g) FROM generate_series(1, 20000) AS g;
ANALYZE jobyard_jobs;
