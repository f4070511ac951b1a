"""Faults 1-9 against three worker processes on a private PostgreSQL cluster.

One scenario runs the faults of the profile in turn under a steady load, then the checker
computes every invariant from the evidence; a violation fails the test. The report (JSON) is
written to the results directory either way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.chaos.checker import attribute, belief_intervals, check, save_run
from tests.chaos.harness import ChaosRun, faketime_library, write_json
from tests.chaos.pgcluster import PrivatePostgres
from tests.chaos.profiles import Profile, current, strict

TIMEOUT = 300 if current().name == "quick" else 3600


@pytest.mark.timeout(TIMEOUT)
def test_three_workers_keep_every_promise_under_faults(
    private_pg: PrivatePostgres, chaos_profile: Profile, chaos_results: Path
) -> None:
    if chaos_profile.faketime and faketime_library() is None:
        pytest.fail("this profile runs workers under faketime: apt-get install faketime")
    workdir = chaos_results / "postgres"
    workdir.mkdir()
    run = ChaosRun(private_pg, chaos_profile, workdir)
    try:
        outcome = run.run()
    finally:
        run.log.dump(workdir / "faults.jsonl")
        shutil.copy(private_pg.log, workdir / "postgresql.log")
    save_run(outcome.data, workdir / "evidence.json.gz")
    report = check(outcome.data)
    document = {
        "profile": chaos_profile.name,
        "seed": chaos_profile.seed,
        "timings_s": outcome.timings,
        "notes": outcome.notes,
        **report.as_json(),
        "per_fault": attribute(outcome.data),
        "leader_terms": [
            {"from": round(s, 3), "until": round(u, 3), "node": node, "term": term}
            for s, u, node, term in belief_intervals(outcome.data)
        ],
    }
    write_json(workdir / "report.json", document)
    for node in outcome.notes.get("nodes", []):
        offset = chaos_profile.faketime.get(node["slot"])
        if offset is not None:  # the fault was really injected: the node's clock is off
            assert abs(node["host_skew_s"] - float(offset.rstrip("s"))) < 5, node
    if chaos_profile.backlog:
        assert outcome.notes["backlog"]["remaining"] == 0, outcome.notes["backlog"]
    failing = report.violations if strict() else report.failures
    known = [v for v in report.violations if v.known is not None]
    for v in known:
        print(f"known issue ({v.invariant}): {v.message} -- {v.known}")
    assert not failing, "\n".join(f"{v.invariant}: {v.message}" for v in failing) + (
        f"\n(report: {workdir / 'report.json'})"
    )
