"""The claim's cost must not grow with the backlog or the history: check its plan."""

from __future__ import annotations

import psycopg

from jobyard.store.postgres.store import _Q


def test_claim_reads_the_claim_index_in_order_and_never_scans_the_table(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobyard_jobs (type, payload, status, finished_at) "
            "SELECT 'done', '{}', 'completed', now() FROM generate_series(1, 50000)"
        )
        conn.execute(
            "INSERT INTO jobyard_jobs (type, payload, priority) "
            "SELECT CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, '{}', g % 5 "
            "FROM generate_series(1, 20000) AS g"
        )
        conn.execute("ANALYZE jobyard_jobs")
        params = {
            "types": ["a", "b"],
            "limits": [16, None],
            "max_jobs": 16,
            "owner": "n1",
            "now": None,
        }
        rows = conn.execute("EXPLAIN " + _Q["claim_jobs"], params).fetchall()
        plan = "\n".join(r[0] for r in rows)
    assert "jobyard_jobs_claim" in plan, plan
    assert "Seq Scan on jobyard_jobs" not in plan, plan
    # Each type's candidates come from an ordered index scan cut by LIMIT, not a sort of the
    # backlog: the only Sort is over the few candidates.
    sorts = [line for line in plan.splitlines() if line.strip().startswith("->  Sort ")]
    assert len(sorts) == 1, plan
    assert "CTE Scan on candidates" in plan.split("->  Sort ", 1)[1].splitlines()[2], plan
