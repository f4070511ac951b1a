-- The room a limited type has in a claim, for the dispatch cycle's one statement.
--
-- A statement's snapshot is taken when it starts, before any lock it takes, so a claim that
-- counted running jobs in its own snapshot could miss claims committed while it waited for the
-- type's lock. This function is VOLATILE: its count runs with a fresh snapshot, taken after the
-- lock is granted, so it sees every claim of the type committed before. The lock is held to the
-- end of the claim's transaction, so no claim of the type commits in between.
--
-- `lock_keys` are the keys of every limited type of the claim, taken in key order on every
-- call (taking a lock this transaction already holds is a no-op), so two claimers never wait
-- on each other in a cycle. `completing` are the ids of the jobs whose results the same
-- statement records: they are running no more, whether or not this snapshot sees it.
CREATE FUNCTION jobyard_claim_room(job_type text, type_limit int, lock_keys bigint[],
                                   completing bigint[])
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    k bigint;
BEGIN
    FOREACH k IN ARRAY (SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM unnest(lock_keys) AS x)
    LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
    RETURN type_limit - (SELECT count(*) FROM jobyard_jobs
                         WHERE status = 'processing' AND type = job_type
                           AND id <> ALL (completing));
END
$$;
