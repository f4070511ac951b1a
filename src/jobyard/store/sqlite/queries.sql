-- SQLite queries. Every write runs inside BEGIN IMMEDIATE, so SQLite's single writer serializes
-- each one against all other processes sharing the file. Times are bound as parameters (epoch
-- seconds): the bundled SQLite (3.40) has no unixepoch('subsec').

-- name: insert_jobs
-- Bulk insert from one JSON array of [type, payload, priority, max_attempts, run_at] rows, in
-- array order, so ids follow the caller's order.
INSERT INTO jobyard_jobs (type, payload, priority, max_attempts, run_at, created_at)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, coalesce(value ->> 4, :now), :now
FROM json_each(:rows)
ORDER BY key
RETURNING *;

-- name: count_running
-- Running jobs per type, for the types whose limit the claim must respect.
SELECT type, count(*) FROM jobyard_jobs
WHERE status = 'processing' AND type IN (SELECT value FROM json_each(:types))
GROUP BY type;

-- name: claim_candidates
-- Due pending jobs of one type, in claim order; an ordered scan of jobyard_jobs_claim.
SELECT id, priority, run_at FROM jobyard_jobs
WHERE status = 'pending' AND type = :type AND run_at <= :now
ORDER BY priority DESC, run_at, id
LIMIT :limit;

-- name: claim_jobs
-- Take the chosen jobs; the status check keeps a job cancelled meanwhile out.
UPDATE jobyard_jobs
SET status = 'processing', owner = :owner, attempt = attempt + 1, started_at = :now,
    finished_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'pending'
RETURNING *;

-- name: complete_jobs
-- Fenced: a result applies only while (id, attempt, owner) match and the job is processing.
-- Rows are [id, attempt, owner, outcome, error, retry_delay].
UPDATE jobyard_jobs AS j
SET status = CASE r.outcome WHEN 'completed' THEN 'completed' WHEN 'failed' THEN 'failed'
                            ELSE 'pending' END,
    finished_at = CASE WHEN r.outcome IN ('completed', 'failed') THEN :now END,
    error = CASE r.outcome WHEN 'completed' THEN NULL WHEN 'released' THEN j.error
                           ELSE r.error END,
    run_at = CASE WHEN r.outcome IN ('retry', 'released') THEN :now + r.retry_delay
                  ELSE j.run_at END,
    attempt = CASE r.outcome WHEN 'released' THEN j.attempt - 1 ELSE j.attempt END,
    owner = CASE WHEN r.outcome IN ('retry', 'released') THEN NULL ELSE j.owner END
FROM (SELECT value ->> 0 AS id, value ->> 1 AS attempt, value ->> 2 AS owner,
             value ->> 3 AS outcome, value ->> 4 AS error, value ->> 5 AS retry_delay
      FROM json_each(:rows)) AS r
WHERE j.id = r.id AND j.attempt = r.attempt AND j.owner = r.owner AND j.status = 'processing'
RETURNING id;

-- name: get_job
SELECT * FROM jobyard_jobs WHERE id = :id;

-- name: list_jobs
-- Newest first; keyset pagination on id.
SELECT * FROM jobyard_jobs
WHERE (:status IS NULL OR status = :status)
  AND (:type IS NULL OR type = :type)
  AND (:before_id IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit;

-- name: count_jobs
SELECT type, status, count(*) FROM jobyard_jobs GROUP BY type, status ORDER BY type, status;

-- name: cancel_job
-- Only a pending job can be cancelled; a running one finishes or fails on its own.
UPDATE jobyard_jobs SET status = 'cancelled', finished_at = :now
WHERE id = :id AND status = 'pending'
RETURNING *;

-- name: retry_job
-- A failed or cancelled job starts again with a fresh set of attempts.
UPDATE jobyard_jobs
SET status = 'pending', attempt = 0, run_at = :now, started_at = NULL, finished_at = NULL,
    owner = NULL
WHERE id = :id AND status IN ('failed', 'cancelled')
RETURNING *;

-- name: renew_node
UPDATE jobyard_nodes
SET heartbeat_at = :now, expires_at = :now + :lease, job_types = :job_types,
    concurrency = :concurrency
WHERE node_id = :node_id;

-- name: insert_node
INSERT INTO jobyard_nodes (node_id, hostname, pid, job_types, concurrency, started_at,
                           heartbeat_at, expires_at)
VALUES (:node_id, :hostname, :pid, :job_types, :concurrency, :now, :now, :now + :lease);

-- name: owned_jobs
SELECT id, attempt FROM jobyard_jobs WHERE owner = :node_id AND status = 'processing';

-- name: remove_node
DELETE FROM jobyard_nodes WHERE node_id = :node_id;

-- name: list_nodes
SELECT * FROM jobyard_nodes WHERE expires_at > :now ORDER BY node_id;

-- name: delete_dead_nodes
-- Fenced like the leader's other maintenance (see fail_stale_jobs).
DELETE FROM jobyard_nodes WHERE expires_at <= :now
  AND (:leader IS NULL OR EXISTS (
      SELECT 1 FROM jobyard_leader l
      WHERE l.name = 'default' AND l.leader_id = :leader
        AND abs(l.elected_at - :elected_at) < 1e-6 AND l.expires_at > :now));

-- name: elect_leader
-- Take the lease only when it is free or expired; a new term starts at :now.
INSERT INTO jobyard_leader (name, leader_id, elected_at, expires_at)
VALUES ('default', :node_id, :now, :now + :lease)
ON CONFLICT (name) DO UPDATE
SET leader_id = excluded.leader_id, elected_at = excluded.elected_at,
    expires_at = excluded.expires_at
WHERE jobyard_leader.expires_at <= :now
RETURNING leader_id, elected_at, expires_at;

-- name: renew_leader
-- Extend exactly this term, and only while it has not expired. A term's time goes through a
-- Python datetime (microseconds) and back, hence the match within a microsecond.
UPDATE jobyard_leader SET expires_at = :now + :lease
WHERE name = 'default' AND leader_id = :node_id AND abs(elected_at - :elected_at) < 1e-6
  AND expires_at > :now
RETURNING leader_id, elected_at, expires_at;

-- name: resign_leader
DELETE FROM jobyard_leader
WHERE name = 'default' AND leader_id = :node_id AND abs(elected_at - :elected_at) < 1e-6;

-- name: get_leader
SELECT leader_id, elected_at, expires_at FROM jobyard_leader
WHERE name = 'default' AND expires_at > :now;

-- name: fail_stale_jobs
-- Maintenance is the leader's, and each of its statements is fenced by the leader's term: given
-- the leader's id and election time, it changes nothing unless that term holds the lease,
-- unexpired at the statement's now. The file has one writer at a time, so the lease cannot
-- change while the statement runs. A NULL leader: no fence.
-- Processing jobs started before :cutoff are failed (compare-and-set
-- on status, so a job that finished meanwhile is untouched).
UPDATE jobyard_jobs
SET status = 'failed', finished_at = :now,
    error = 'timed out: still processing on node ' || coalesce(owner, '?')
            || ' after its job timeout (attempt ' || attempt || ')'
WHERE status = 'processing' AND started_at < :cutoff
  AND (:types IS NULL OR type IN (SELECT value FROM json_each(:types)))
  AND type NOT IN (SELECT value FROM json_each(:exclude_types))
  AND (NOT :skip_live OR owner IS NULL
       OR owner NOT IN (SELECT node_id FROM jobyard_nodes WHERE expires_at > :now))
  AND (:leader IS NULL OR EXISTS (
      SELECT 1 FROM jobyard_leader l
      WHERE l.name = 'default' AND l.leader_id = :leader
        AND abs(l.elected_at - :elected_at) < 1e-6 AND l.expires_at > :now))
RETURNING id;

-- name: rescue_orphaned_jobs
-- Jobs whose owner is no longer a live node: back to pending while attempts remain, else
-- failed. The rescue counts as the attempt, so a job that kills its node cannot loop forever.
UPDATE jobyard_jobs
SET status = CASE WHEN attempt < max_attempts THEN 'pending' ELSE 'failed' END,
    run_at = CASE WHEN attempt < max_attempts THEN :now ELSE run_at END,
    finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE :now END,
    error = 'node ' || coalesce(owner, '?') || ' stopped heartbeating during attempt '
            || attempt,
    owner = CASE WHEN attempt < max_attempts THEN NULL ELSE owner END
WHERE status = 'processing'
  AND (owner IS NULL
       OR owner NOT IN (SELECT node_id FROM jobyard_nodes WHERE expires_at > :now))
  AND (:leader IS NULL OR EXISTS (
      SELECT 1 FROM jobyard_leader l
      WHERE l.name = 'default' AND l.leader_id = :leader
        AND abs(l.elected_at - :elected_at) < 1e-6 AND l.expires_at > :now))
RETURNING status;

-- name: prune_jobs
-- One small batch of finished jobs past their retention, so the write lock is held briefly.
DELETE FROM jobyard_jobs
WHERE id IN (SELECT id FROM jobyard_jobs
             WHERE status = :status AND finished_at < :before
             ORDER BY finished_at
             LIMIT :batch)
  AND (:leader IS NULL OR EXISTS (
      SELECT 1 FROM jobyard_leader l
      WHERE l.name = 'default' AND l.leader_id = :leader
        AND abs(l.elected_at - :elected_at) < 1e-6 AND l.expires_at > :now));

-- name: any_due
-- A lock-free look before the claim takes the write lock: most idle wake-ups end here.
SELECT 1 FROM jobyard_jobs
WHERE status = 'pending' AND type IN (SELECT value FROM json_each(:types)) AND run_at <= :now
LIMIT 1;

-- name: finished_per_minute
-- Jobs finished per minute since :since, for throughput charts.
SELECT CAST(finished_at / 60 AS INTEGER) * 60 AS minute, count(*) FROM jobyard_jobs
WHERE finished_at >= :since AND status IN ('completed', 'failed')
GROUP BY minute ORDER BY minute;
