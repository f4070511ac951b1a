-- PostgreSQL queries. Every time-dependent query takes %(now)s; NULL means the database clock.
-- Compared with the SQLite file: arrays and unnest replace json_each, FOR UPDATE SKIP LOCKED
-- lets claims of different types and nodes pass each other, and advisory locks serialize the
-- claims of one limited type.

-- name: insert_jobs
-- Bulk insert from parallel arrays, in array order, so ids follow the caller's order.
INSERT INTO jobyard_jobs (type, payload, priority, max_attempts, run_at, created_at)
SELECT r.type, r.payload::jsonb, r.priority, r.max_attempts,
       coalesce(r.run_at, coalesce(%(now)s, now())), coalesce(%(now)s, now())
FROM unnest(%(types)s::text[], %(payloads)s::text[], %(priorities)s::int[],
            %(max_attempts)s::int[], %(run_ats)s::timestamptz[])
     WITH ORDINALITY AS r(type, payload, priority, max_attempts, run_at, ord)
ORDER BY r.ord
RETURNING id, payload, run_at, created_at;

-- name: insert_job
-- One job: plain parameters, cheaper to send than five one-element arrays.
INSERT INTO jobyard_jobs (type, payload, priority, max_attempts, run_at, created_at)
VALUES (%(type)s, %(payload)s::jsonb, %(priority)s, %(max_attempts)s,
        coalesce(%(run_at)s::timestamptz, coalesce(%(now)s, now())), coalesce(%(now)s, now()))
RETURNING id, payload, run_at, created_at;

-- name: complete_and_claim
-- One dispatch cycle in one statement (and so one implicit transaction): record the results,
-- then claim. A result applies only while (id, attempt, owner) match and the job is
-- processing: the fence. Recording results alone is this statement with nothing to claim.
-- Room per type is the free slots, capped by (limit - running) for limited types. Each type is
-- an ordered scan of jobyard_jobs_claim (LATERAL), and the union is cut to max_jobs in claim
-- order: higher priority, then earlier run_at, then lower id. The first column lists the ids
-- whose result applied; one row per claimed job follows it, or a single row of NULLs when
-- nothing was claimed.
WITH done AS (
    UPDATE jobyard_jobs AS j
    SET status = CASE r.outcome WHEN 'completed' THEN 'completed' WHEN 'failed' THEN 'failed'
                                ELSE 'pending' END,
        finished_at = CASE WHEN r.outcome IN ('completed', 'failed')
                           THEN coalesce(%(now)s, now()) END,
        error = CASE r.outcome WHEN 'completed' THEN NULL WHEN 'released' THEN j.error
                               ELSE r.error END,
        run_at = CASE WHEN r.outcome IN ('retry', 'released')
                      THEN coalesce(%(now)s, now()) + make_interval(secs => r.retry_delay)
                      ELSE j.run_at END,
        attempt = CASE r.outcome WHEN 'released' THEN j.attempt - 1 ELSE j.attempt END,
        owner = CASE WHEN r.outcome IN ('retry', 'released') THEN NULL ELSE j.owner END
    FROM jsonb_to_recordset(%(rows)s::jsonb)
         AS r(id bigint, attempt int, owner text, outcome text, error text, retry_delay float8)
    WHERE j.id = r.id AND j.attempt = r.attempt AND j.owner = r.owner
      AND j.status = 'processing'
    RETURNING j.id, j.type
), wanted AS (
    -- A limited type's room comes from jobyard_claim_room (migration 0005): it takes the
    -- limited types' locks and counts their running jobs after they are granted. Its last
    -- argument, read from done, also makes the results land before it counts.
    SELECT t.type,
           CASE WHEN t.lim IS NULL THEN %(max_jobs)s
                ELSE least(%(max_jobs)s, jobyard_claim_room(
                    t.type, t.lim, %(keys)s::bigint[],
                    (SELECT coalesce(array_agg(d.id), '{}') FROM done d WHERE d.type = t.type)))
           END AS room
    FROM unnest(%(types)s::text[], %(limits)s::int[]) AS t(type, lim)
), candidates AS (
    SELECT c.id, c.priority, c.run_at
    FROM wanted w
    CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at FROM jobyard_jobs j
        WHERE j.status = 'pending' AND j.type = w.type
          AND j.run_at <= coalesce(%(now)s, now())
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT greatest(w.room, 0)
        FOR UPDATE SKIP LOCKED
    ) AS c
), chosen AS (
    SELECT id FROM candidates ORDER BY priority DESC, run_at, id LIMIT %(max_jobs)s
), claimed AS (
    UPDATE jobyard_jobs AS j
    SET status = 'processing', owner = %(owner)s, attempt = j.attempt + 1,
        started_at = coalesce(%(now)s, now()), finished_at = NULL
    WHERE j.id = ANY (ARRAY(SELECT id FROM chosen))
    RETURNING j.*
)
SELECT a.applied, c.*
FROM (SELECT coalesce(array_agg(id), '{}') AS applied FROM done) AS a
LEFT JOIN claimed AS c ON true;

-- name: claim_jobs
-- The cycle when it has no result to record and no limited type to claim: complete_and_claim
-- without its fenced update and its room per type. Same candidates, same order, same claimed
-- row; an empty UPDATE still opens the table and its indexes, which costs an idle node
-- about a tenth of a millisecond on the way from a wake-up to a running job.
WITH candidates AS (
    SELECT c.id, c.priority, c.run_at
    FROM unnest(%(types)s::text[]) AS t(type)
    CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at FROM jobyard_jobs j
        WHERE j.status = 'pending' AND j.type = t.type
          AND j.run_at <= coalesce(%(now)s, now())
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT %(max_jobs)s
        FOR UPDATE SKIP LOCKED
    ) AS c
), chosen AS (
    SELECT id FROM candidates ORDER BY priority DESC, run_at, id LIMIT %(max_jobs)s
)
UPDATE jobyard_jobs AS j
SET status = 'processing', owner = %(owner)s, attempt = j.attempt + 1,
    started_at = coalesce(%(now)s, now()), finished_at = NULL
WHERE j.id = ANY (ARRAY(SELECT id FROM chosen))
RETURNING j.*;

-- name: get_job
SELECT * FROM jobyard_jobs WHERE id = %(id)s;

-- name: list_jobs
-- Newest first; keyset pagination on id.
SELECT * FROM jobyard_jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: count_jobs
SELECT type, status, count(*) FROM jobyard_jobs GROUP BY type, status ORDER BY type, status;

-- name: cancel_job
-- Only a pending job can be cancelled; a running one finishes or fails on its own.
UPDATE jobyard_jobs SET status = 'cancelled', finished_at = coalesce(%(now)s, now())
WHERE id = %(id)s AND status = 'pending'
RETURNING *;

-- name: retry_job
-- A failed or cancelled job starts again with a fresh set of attempts.
UPDATE jobyard_jobs
SET status = 'pending', attempt = 0, run_at = coalesce(%(now)s, now()), started_at = NULL,
    finished_at = NULL, owner = NULL
WHERE id = %(id)s AND status IN ('failed', 'cancelled')
RETURNING *;

-- name: heartbeat_node
-- Register or renew; xmax = 0 only for a freshly inserted row.
INSERT INTO jobyard_nodes AS n (node_id, hostname, pid, job_types, concurrency, started_at,
                                heartbeat_at, expires_at)
VALUES (%(node_id)s, %(hostname)s, %(pid)s, %(job_types)s, %(concurrency)s,
        coalesce(%(now)s, now()), coalesce(%(now)s, now()),
        coalesce(%(now)s, now()) + make_interval(secs => %(lease)s))
ON CONFLICT (node_id) DO UPDATE
SET heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at,
    job_types = excluded.job_types, concurrency = excluded.concurrency
RETURNING (xmax <> 0) AS existed;

-- name: owned_jobs
SELECT id, attempt FROM jobyard_jobs WHERE owner = %(node_id)s AND status = 'processing';

-- name: remove_node
DELETE FROM jobyard_nodes WHERE node_id = %(node_id)s;

-- name: list_nodes
SELECT node_id, hostname, pid, job_types, concurrency, started_at, heartbeat_at, expires_at
FROM jobyard_nodes WHERE expires_at > coalesce(%(now)s, now()) ORDER BY node_id;

-- name: delete_dead_nodes
-- Fenced like the leader's other maintenance (see fail_stale_jobs).
DELETE FROM jobyard_nodes WHERE expires_at <= coalesce(%(now)s, now())
  AND (%(leader)s::text IS NULL OR EXISTS (
      SELECT 1 FROM jobyard_leader l
      WHERE l.name = 'default' AND l.leader_id = %(leader)s::text
        AND l.elected_at = %(elected_at)s::timestamptz AND l.expires_at > coalesce(%(now)s, now())
      FOR SHARE));

-- name: elect_leader
-- Take the lease only when it is free or expired; a new term starts now.
INSERT INTO jobyard_leader AS l (name, leader_id, elected_at, expires_at)
VALUES ('default', %(node_id)s, coalesce(%(now)s, now()),
        coalesce(%(now)s, now()) + make_interval(secs => %(lease)s))
ON CONFLICT (name) DO UPDATE
SET leader_id = excluded.leader_id, elected_at = excluded.elected_at,
    expires_at = excluded.expires_at
WHERE l.expires_at <= coalesce(%(now)s, now())
RETURNING leader_id, elected_at, expires_at;

-- name: renew_leader
-- Extend exactly this term, and only while it has not expired.
UPDATE jobyard_leader
SET expires_at = coalesce(%(now)s, now()) + make_interval(secs => %(lease)s)
WHERE name = 'default' AND leader_id = %(node_id)s AND elected_at = %(elected_at)s
  AND expires_at > coalesce(%(now)s, now())
RETURNING leader_id, elected_at, expires_at;

-- name: resign_leader
DELETE FROM jobyard_leader
WHERE name = 'default' AND leader_id = %(node_id)s AND elected_at = %(elected_at)s;

-- name: get_leader
SELECT leader_id, elected_at, expires_at FROM jobyard_leader
WHERE name = 'default' AND expires_at > coalesce(%(now)s, now());

-- name: fail_stale_jobs
-- Maintenance is the leader's, and each of its statements is fenced by the leader's term: given
-- the leader's id and election time, it changes nothing unless that term holds the lease,
-- unexpired by the database's clock. The fence takes a share lock on the lease row, so a new
-- election (an update of that row) waits until the statement has committed: no maintenance
-- statement of a term ever lands after the next term began. A NULL leader: no fence.
-- Processing jobs started before cutoff are failed (compare-and-set
-- on status, so a job that finished meanwhile is untouched).
UPDATE jobyard_jobs
SET status = 'failed', finished_at = coalesce(%(now)s, now()),
    error = 'timed out: still processing on node ' || coalesce(owner, '?')
            || ' after its job timeout (attempt ' || attempt || ')'
WHERE status = 'processing' AND started_at < %(cutoff)s
  AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[]))
  AND NOT (type = ANY(%(exclude_types)s::text[]))
  AND (NOT %(skip_live)s OR NOT EXISTS (
      SELECT 1 FROM jobyard_nodes n
      WHERE n.node_id = jobyard_jobs.owner AND n.expires_at > coalesce(%(now)s, now())))
  AND (%(leader)s::text IS NULL OR EXISTS (
      SELECT 1 FROM jobyard_leader l
      WHERE l.name = 'default' AND l.leader_id = %(leader)s::text
        AND l.elected_at = %(elected_at)s::timestamptz AND l.expires_at > coalesce(%(now)s, now())
      FOR SHARE))
RETURNING id;

-- name: rescue_orphaned_jobs
-- Jobs whose owner is no longer a live node: back to pending while attempts remain, else
-- failed. The rescue counts as the attempt, so a job that kills its node cannot loop forever.
UPDATE jobyard_jobs AS j
SET status = CASE WHEN attempt < max_attempts THEN 'pending' ELSE 'failed' END,
    run_at = CASE WHEN attempt < max_attempts THEN coalesce(%(now)s, now()) ELSE run_at END,
    finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE coalesce(%(now)s, now()) END,
    error = 'node ' || coalesce(owner, '?') || ' stopped heartbeating during attempt '
            || attempt,
    owner = CASE WHEN attempt < max_attempts THEN NULL ELSE owner END
WHERE status = 'processing'
  AND NOT EXISTS (SELECT 1 FROM jobyard_nodes n
                  WHERE n.node_id = j.owner AND n.expires_at > coalesce(%(now)s, now()))
  AND (%(leader)s::text IS NULL OR EXISTS (
      SELECT 1 FROM jobyard_leader l
      WHERE l.name = 'default' AND l.leader_id = %(leader)s::text
        AND l.elected_at = %(elected_at)s::timestamptz AND l.expires_at > coalesce(%(now)s, now())
      FOR SHARE))
RETURNING status;

-- name: prune_jobs
-- One small batch of finished jobs past their retention: a short statement that holds few
-- locks, repeated by the caller until it deletes fewer than a batch.
DELETE FROM jobyard_jobs
WHERE id IN (SELECT id FROM jobyard_jobs
             WHERE status = %(status)s AND finished_at < %(before)s
             ORDER BY finished_at
             LIMIT %(batch)s
             FOR UPDATE SKIP LOCKED)
  AND (%(leader)s::text IS NULL OR EXISTS (
      SELECT 1 FROM jobyard_leader l
      WHERE l.name = 'default' AND l.leader_id = %(leader)s::text
        AND l.elected_at = %(elected_at)s::timestamptz AND l.expires_at > coalesce(%(now)s, now())
      FOR SHARE));

-- name: finished_per_minute
-- Jobs finished per minute since %(since)s, for throughput charts.
SELECT date_trunc('minute', finished_at) AS minute, count(*) FROM jobyard_jobs
WHERE finished_at >= %(since)s AND status IN ('completed', 'failed')
GROUP BY minute ORDER BY minute;
