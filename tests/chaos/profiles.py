"""How long and how hard the chaos suite pushes: the quick profile (in `make test`) and the
full one (`make chaos`, or JOBYARD_CHAOS=full)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    seed: int
    # Timings given to every node: a short lease so failovers fit in a test.
    lease: float = 3.0
    heartbeat: float = 1.0
    # Steady load: jobs per second per type, produced in ticks of 0.1 s.
    rate: dict[str, int] = field(default_factory=lambda: {"work": 20, "bulk": 20})
    warmup_s: float = 2.0
    baseline_s: float = 4.0
    # (1) SIGKILL a random worker every few seconds, with failpoints armed meanwhile.
    random_kills: int = 3
    kill_every_s: float = 2.0
    failpoints: str = "after_claim=kill@0.03,after_effect=kill@0.01,before_complete=kill@0.03"
    # (2) SIGKILL the leader (the supervisor restarts it).
    leader_kills: int = 1
    # (3) SIGSTOP the leader for twice the lease: at a random moment, and in mid-pass.
    plain_stops: int = 1
    midpass_stops: int = 1
    # (4) pg_ctl restart of the private cluster, in these modes, in order.
    pg_restarts: tuple[str, ...] = ("fast", "immediate")
    # (5) pg_terminate_backend of listener, leader, worker, claim, heartbeat connections, per round.
    terminate_rounds: int = 1
    # (6) jobs that outlive their timeout: cooperative (slow) and CPU-bound (spin), each.
    timeout_jobs: int = 2
    # (7) poison pills: jobs that kill their process, and undecodable payloads.
    suicide_jobs: int = 1
    invalid_jobs: int = 2
    # (8) a backlog drained while another session holds a transaction open (0: skipped).
    backlog: int = 0
    backlog_kills: int = 0
    long_tx_s: float = 180.0  # how long the transaction stays open during the drain
    backlog_timeout_s: float = 900.0
    # (9) workers under libfaketime: slot -> FAKETIME offset.
    faketime: dict[int, str] = field(default_factory=dict)
    # Slot 0's worker opens its store with fast_transitions=True (a documented opt-in), so
    # crash restarts can undo its claims and results.
    fast_transitions: bool = True
    # (10) SQLite: seconds of SIGKILLs among two workers and a producer.
    sqlite_kill_s: float = 8.0
    settle_timeout_s: float = 40.0

    @property
    def gap(self) -> float:
        """Quiet time after a disruptive fault: the recovery bound, two leases."""
        return 2 * self.lease


QUICK = Profile(name="quick", seed=20240601)

FULL = Profile(
    name="full",
    seed=20240602,
    rate={"work": 30, "bulk": 30},
    warmup_s=3.0,
    baseline_s=8.0,
    random_kills=10,
    kill_every_s=2.5,
    leader_kills=2,
    plain_stops=1,
    midpass_stops=1,
    pg_restarts=("fast", "immediate", "fast", "immediate", "immediate", "immediate"),
    terminate_rounds=2,
    timeout_jobs=4,
    suicide_jobs=2,
    invalid_jobs=5,
    backlog=100_000,
    backlog_kills=2,
    faketime={1: "+90s", 2: "-90s"},
    sqlite_kill_s=30.0,
    settle_timeout_s=300.0,
)


def current() -> Profile:
    name = os.environ.get("JOBYARD_CHAOS", "quick").strip().lower() or "quick"
    if name not in ("quick", "full"):
        raise ValueError(f"JOBYARD_CHAOS must be quick or full, not {name!r}")
    profile = FULL if name == "full" else QUICK
    seed = os.environ.get("JOBYARD_CHAOS_SEED")
    if seed:
        from dataclasses import replace

        profile = replace(profile, seed=int(seed))
    return profile


def strict() -> bool:
    """Known engine issues fail the run too: always in the full profile, or when asked."""
    flag = os.environ.get("JOBYARD_CHAOS_STRICT", "").strip().lower()
    if flag:
        return flag in ("1", "true", "yes")
    return current().name == "full"
