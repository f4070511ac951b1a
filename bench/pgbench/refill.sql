-- Keeps the pgbench baseline's backlog from running dry: picked once for every ten
-- claim_complete.sql transactions (weights 10:1), it inserts 192 pending jobs, 20% more than the
-- ten claims take. Not part of the measured work; jobs/s counts completed rows only.
INSERT INTO jobyard_jobs (type, payload)
SELECT 'bench', jsonb_build_object('i', g) FROM generate_series(1, 192) AS g;
