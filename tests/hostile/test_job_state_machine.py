"""The job lifecycle under random operations, on both stores, against a model.

A hypothesis state machine enqueues, claims (as three nodes, under per-type limits), reports
results with current and stale fencing tokens, cancels, retries, heartbeats, rescues orphans
and fails stale jobs while a virtual clock moves forward. After every step the whole jobs
table is read back and must equal the model exactly; independently of the model it must also
only ever have moved along the lifecycle's edges:

    pending -> processing -> completed | failed | pending      (results, rescue, fail_stale)
    pending -> cancelled                                        (cancel)
    failed | cancelled -> pending                               (retry_job, attempts reset)

A completed job never changes again, a stale token never changes anything, no limited type
ever runs more jobs than its limit, and the attempt never exceeds max_attempts.

The workers here follow the dispatcher's policy (retry only while attempts remain): the store
itself does not refuse a RETRY at the last attempt, which is the engine's job.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from jobyard import Job, JobStatus, Queue
from jobyard.store.ports import Store
from jobyard.store.records import ClaimParams, JobFilter, JobResult, NodeInfo, Outcome
from tests.hostile.helpers import StoreRunner, wipe_jobs_and_nodes

T = TypeVar("T")
TYPES = ("a", "b", "c")
LIMITS = {"a": 2, "b": 1}  # "c" has no cluster-wide limit
NODES = ("n1", "n2", "n3")
P, R, C, F, X = (
    JobStatus.PENDING,
    JobStatus.PROCESSING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)
LEGAL_EDGES = {(P, R), (P, X), (R, C), (R, F), (R, P), (F, P), (X, P)}


def note(what: str) -> None:
    """A hypothesis event (shown with --hypothesis-show-statistics), when run by hypothesis."""
    if currently_in_test_context():
        event(what)


@dataclass
class ModelJob:
    id: int
    type: str
    priority: int
    max_attempts: int
    status: JobStatus
    attempt: int
    owner: str | None
    run_at: datetime
    started_at: datetime | None = None

    def claim_key(self) -> tuple[int, datetime, int]:
        return (-self.priority, self.run_at, self.id)


@dataclass(frozen=True)
class Token:
    job_id: int
    attempt: int
    owner: str


async def complete_and_claim(
    sr: StoreRunner, results: list[JobResult], params: ClaimParams
) -> tuple[set[int], list[Job]]:
    """The busy node's cycle: `Store.complete_and_claim` where the store has it (it is being
    added to both stores), else the two calls it combines."""
    combined = getattr(sr.store, "complete_and_claim", None)
    if combined is not None:
        applied, claimed = await combined(results, params)
        return set(applied), list(claimed)
    applied = await sr.store.complete_jobs(results, now=params.now)
    return applied, await sr.store.claim_jobs(params)


class JobLifecycle(RuleBasedStateMachine):
    """Rules and checks; `make_machine` binds them to one store."""

    sr: ClassVar[StoreRunner]

    def __init__(self) -> None:
        super().__init__()
        wipe_jobs_and_nodes(self.sr.url)
        self.queue = Queue(self.store)
        for job_type in TYPES:
            self.queue.declare(job_type)
        # Whole seconds: exact on both stores (SQLite keeps epoch floats).
        self.now = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()), UTC)
        self.jobs: dict[int, ModelJob] = {}
        self.nodes: dict[str, datetime] = {}  # node -> liveness expiry
        self.tokens: list[Token] = []  # every token ever handed out
        self.seen: dict[int, Job] = {}  # the store's jobs after the last step
        self.completed: dict[int, Job] = {}  # completed jobs, as first seen

    # -- helpers -----------------------------------------------------------------------
    @property
    def store(self) -> Store:
        return self.sr.store

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.sr.run(coro)

    def _alive(self, node: str | None) -> bool:
        return node is not None and self.nodes.get(node, self.now) > self.now

    def _expected_claim(self, params: ClaimParams, skip: set[int]) -> list[int]:
        running = Counter(j.type for j in self.jobs.values() if j.status is R)
        candidates: list[ModelJob] = []
        for job_type in params.job_types:
            room = params.max_jobs
            if job_type in params.limits:
                room = min(room, params.limits[job_type] - running[job_type])
            due = sorted(
                (
                    j
                    for j in self.jobs.values()
                    if j.type == job_type
                    and j.status is P
                    and j.run_at <= self.now
                    and j.id not in skip
                ),
                key=ModelJob.claim_key,
            )
            candidates.extend(due[: max(room, 0)])
        candidates.sort(key=ModelJob.claim_key)
        return [j.id for j in candidates[: params.max_jobs]]

    def _apply_claim(
        self, params: ClaimParams, claimed: list[Job], skip: set[int] | None = None
    ) -> None:
        """`skip`: jobs whose results the same call recorded; the call never claims them."""
        want = self._expected_claim(params, skip or set())
        note(f"claim took {len(want)}")
        assert sorted(j.id for j in claimed) == sorted(want), (want, claimed)
        keys = [(-j.priority, j.run_at, j.id) for j in claimed]
        assert keys == sorted(keys), "claims come back in claim order"
        for job in claimed:
            model = self.jobs[job.id]
            model.status, model.attempt, model.owner = R, model.attempt + 1, params.node_id
            model.started_at = self.now
            assert (job.status, job.attempt, job.owner) == (R, model.attempt, model.owner)
            self.tokens.append(Token(job.id, job.attempt, params.node_id))

    def _result(self, token: Token, wanted: Outcome, delay: int) -> JobResult:
        outcome = wanted
        if wanted is Outcome.RETRY and token.attempt >= self.jobs[token.job_id].max_attempts:
            outcome = Outcome.FAILED  # the dispatcher's policy: no attempts left
        error = None if outcome is Outcome.COMPLETED else f"{outcome.value} by {token.owner}"
        return JobResult(token.job_id, token.attempt, token.owner, outcome, error, delay)

    def _valid(self, result: JobResult) -> bool:
        model = self.jobs[result.job_id]
        return model.status is R and model.attempt == result.attempt and model.owner == result.owner

    def _apply_result(self, result: JobResult) -> None:
        model = self.jobs[result.job_id]
        if result.outcome is Outcome.COMPLETED:
            model.status = C
        elif result.outcome is Outcome.FAILED:
            model.status = F
        else:
            model.status, model.owner = P, None
            model.run_at = self.now + timedelta(seconds=result.retry_delay)
            if result.outcome is Outcome.RELEASED:
                model.attempt -= 1

    def _draw_token(self, data: st.DataObject) -> Token:
        # Mostly a running job (the interesting case), sometimes any job at all.
        running = sorted(i for i, j in self.jobs.items() if j.status is R)
        focus = data.draw(st.integers(min_value=0, max_value=3), label="focus")
        pool = running if running and focus else sorted(self.jobs)
        job_id = data.draw(st.sampled_from(pool), label="job")
        model = self.jobs[job_id]
        history = [t for t in self.tokens if t.job_id == job_id]
        choices = ["old_attempt", "next_attempt", "other_owner"]
        if model.status is R:
            choices += ["current"] * 4
        if history:
            choices.append("historic")
        kind = data.draw(st.sampled_from(choices), label="token")
        owner = model.owner or "n1"
        if kind == "current":
            return Token(job_id, model.attempt, owner)
        if kind == "old_attempt":
            return Token(job_id, model.attempt - 1, owner)
        if kind == "next_attempt":
            return Token(job_id, model.attempt + 1, owner)
        if kind == "other_owner":
            return Token(job_id, model.attempt, next(n for n in NODES if n != owner))
        return data.draw(st.sampled_from(history), label="historic token")

    def _stored(self, job_id: int) -> Job:
        job = self.run(self.store.get_job(job_id))
        assert job is not None
        return job

    # -- rules -------------------------------------------------------------------------
    @initialize()
    def start_empty(self) -> None:
        assert self.run(self.store.list_jobs(JobFilter(limit=10))) == []

    @rule(
        job_type=st.sampled_from(TYPES),
        priority=st.integers(min_value=-1, max_value=1),
        max_attempts=st.integers(min_value=1, max_value=3),
        delay=st.sampled_from([0, 0, 0, 30, 600]),
        count=st.integers(min_value=1, max_value=3),
    )
    def enqueue(
        self, job_type: str, priority: int, max_attempts: int, delay: int, count: int
    ) -> None:
        run_at = self.now + timedelta(seconds=delay)
        created = self.run(
            self.queue.enqueue_many(
                job_type,
                [{"n": i} for i in range(count)],
                run_at=run_at,
                priority=priority,
                max_attempts=max_attempts,
            )
        )
        assert len(created) == count
        for job in created:
            assert job.id not in self.jobs
            assert (job.status, job.attempt, job.owner, job.run_at) == (P, 0, None, run_at)
            self.jobs[job.id] = ModelJob(
                job.id, job_type, priority, max_attempts, P, 0, None, run_at
            )

    @rule(node=st.sampled_from(NODES), lease=st.sampled_from([10, 120]))
    def heartbeat(self, node: str, lease: int) -> None:
        info = NodeInfo(node_id=node, hostname="h", pid=1, job_types=TYPES, concurrency=3)
        beat = self.run(self.sr.store.heartbeat_node(info, timedelta(seconds=lease), now=self.now))
        owned = {(j.id, j.attempt) for j in self.jobs.values() if j.status is R}
        owned = {(i, a) for i, a in owned if self.jobs[i].owner == node}
        assert beat.existed == (node in self.nodes)
        assert beat.owned == owned
        self.nodes[node] = self.now + timedelta(seconds=lease)

    @precondition(lambda self: any(j.status is P for j in self.jobs.values()))
    @rule(
        node=st.sampled_from(NODES),
        types=st.just(list(TYPES))
        | st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True),
        max_jobs=st.integers(min_value=0, max_value=3),
    )
    def claim(self, node: str, types: list[str], max_jobs: int) -> None:
        limits = {t: LIMITS[t] for t in types if t in LIMITS}
        params = ClaimParams(node, types, max_jobs, limits, now=self.now)
        self._apply_claim(params, self.run(self.store.claim_jobs(params)))

    @precondition(lambda self: bool(self.jobs))
    @rule(
        data=st.data(),
        outcome=st.sampled_from(list(Outcome)),
        delay=st.sampled_from([0, 1, 60]),
    )
    def report_one(self, data: st.DataObject, outcome: Outcome, delay: int) -> None:
        result = self._result(self._draw_token(data), outcome, delay)
        valid = self._valid(result)
        before = self._stored(result.job_id)
        applied = self.run(self.store.complete_job(result, now=self.now))
        assert applied == valid, (result, before)
        note(f"single {result.outcome.value} {'applied' if valid else 'stale'}")
        if valid:
            self._apply_result(result)
        else:
            assert self._stored(result.job_id) == before, "a stale token changed a job"

    @precondition(lambda self: bool(self.jobs))
    @rule(
        data=st.data(),
        outcome=st.sampled_from(list(Outcome)),
        then_claim=st.booleans(),
        node=st.sampled_from(NODES),
        max_jobs=st.integers(min_value=0, max_value=3),
    )
    def report_batch(
        self, data: st.DataObject, outcome: Outcome, then_claim: bool, node: str, max_jobs: int
    ) -> None:
        """Several results at once (distinct jobs), alone or with the next claim in the
        same transaction, as a busy node sends them."""
        tokens: dict[int, Token] = {}
        for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="n")):
            token = self._draw_token(data)
            tokens.setdefault(token.job_id, token)
        results = [self._result(t, outcome, 0) for t in tokens.values()]
        valid = {r.job_id for r in results if self._valid(r)}
        before = {r.job_id: self._stored(r.job_id) for r in results}
        if then_claim:
            limits = {t: LIMITS[t] for t in TYPES if t in LIMITS}
            params = ClaimParams(node, TYPES, max_jobs, limits, now=self.now)
            applied, claimed = self.run(complete_and_claim(self.sr, results, params))
        else:
            applied = self.run(self.store.complete_jobs(results, now=self.now))
        assert applied == valid
        note(f"batch applied={len(valid)}/{len(results)} claim={then_claim}")
        for result in results:
            if result.job_id in valid:
                self._apply_result(result)
            elif not then_claim:
                assert self._stored(result.job_id) == before[result.job_id]
        if then_claim:
            self._apply_claim(params, claimed, skip=valid)

    @precondition(lambda self: bool(self.jobs))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        model = self.jobs[job_id]
        update = self.run(self.store.cancel_job(job_id, now=self.now))
        assert update is not None
        assert update.changed is (model.status is P)
        if model.status is P:
            model.status = X
        assert update.job.status is model.status

    @precondition(lambda self: bool(self.jobs))
    @rule(data=st.data())
    def retry_job(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        model = self.jobs[job_id]
        update = self.run(self.store.retry_job(job_id, now=self.now))
        assert update is not None
        assert update.changed is (model.status in (F, X))
        if model.status in (F, X):
            model.status, model.attempt, model.owner, model.run_at = P, 0, None, self.now
            model.started_at = None
        assert (update.job.status, update.job.attempt) == (model.status, model.attempt)

    @rule(job_id=st.sampled_from([0, -1, 2**63 - 1]))
    def act_on_a_missing_job(self, job_id: int) -> None:
        assert self.run(self.store.cancel_job(job_id, now=self.now)) is None
        assert self.run(self.store.retry_job(job_id, now=self.now)) is None
        stale = JobResult(job_id, 1, "n1", Outcome.COMPLETED)
        assert self.run(self.store.complete_job(stale, now=self.now)) is False

    @precondition(lambda self: any(j.status is R for j in self.jobs.values()))
    @rule()
    def rescue_orphans(self) -> None:
        retried = failed = 0
        for model in self.jobs.values():
            if model.status is R and not self._alive(model.owner):
                if model.attempt < model.max_attempts:
                    model.status, model.owner, model.run_at = P, None, self.now
                    retried += 1
                else:
                    model.status = F
                    failed += 1
        result = self.run(self.store.rescue_orphaned_jobs(now=self.now))
        assert (result.retried, result.failed) == (retried, failed)
        note(f"rescue retried={min(retried, 1)} failed={min(failed, 1)}")

    @precondition(lambda self: any(j.status is R for j in self.jobs.values()))
    @rule(
        timeout=st.sampled_from([1, 60, 3600]),
        job_types=st.none() | st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
    )
    def fail_stale(self, timeout: int, job_types: list[str] | None) -> None:
        cutoff = self.now - timedelta(seconds=timeout)
        expected = 0
        for model in self.jobs.values():
            started = model.started_at
            in_scope = job_types is None or model.type in job_types
            if model.status is R and in_scope and started is not None and started < cutoff:
                model.status = F
                expected += 1
        failed = self.run(self.sr.store.fail_stale_jobs(cutoff, job_types=job_types, now=self.now))
        assert failed == expected
        note(f"fail_stale failed={min(expected, 1)}")

    @rule()
    def delete_dead_nodes(self) -> None:
        dead = [n for n, expires in self.nodes.items() if expires <= self.now]
        assert self.run(self.store.delete_dead_nodes(now=self.now)) == len(dead)
        for node in dead:
            del self.nodes[node]

    @rule(seconds=st.sampled_from([1, 5, 30, 120, 900]))
    def advance_clock(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    # -- checks after every step -------------------------------------------------------
    @invariant()
    def the_store_matches_the_model_and_only_legal_edges_were_taken(self) -> None:
        stored = {j.id: j for j in self.run(self.store.list_jobs(JobFilter(limit=100_000)))}
        assert stored.keys() == self.jobs.keys()
        for job_id, job in stored.items():
            model = self.jobs[job_id]
            got = (job.type, job.priority, job.max_attempts, job.status, job.attempt, job.owner)
            want = (
                model.type,
                model.priority,
                model.max_attempts,
                model.status,
                model.attempt,
                model.owner,
            )
            assert got == want, (job_id, got, want)
            if job.status is P:
                assert job.run_at == model.run_at, (job_id, job.run_at, model.run_at)
            assert 0 <= job.attempt <= job.max_attempts, job
            assert (job.finished_at is not None) == job.status.is_final, job
            previous = self.seen.get(job_id)
            if previous is not None and previous.status is not job.status:
                edge = (previous.status, job.status)
                assert edge in LEGAL_EDGES, (job_id, edge)
            if job.status is C:
                assert self.completed.setdefault(job_id, job) == job, "completed changed"
                assert job.error is None
        running = Counter(j.type for j in stored.values() if j.status is R)
        for job_type, limit in LIMITS.items():
            assert running[job_type] <= limit, (job_type, running[job_type])
        self.seen = stored


def make_machine(sr: StoreRunner) -> type[JobLifecycle]:
    return type(f"JobLifecycleOn{sr.backend.title()}", (JobLifecycle,), {"sr": sr})


# Shrinking replays a failing run hundreds of times against a real database, which can take
# minutes; the unshrunk run (at most 50 steps) is printed anyway. HYPOTHESIS_SHRINK=1 shrinks.
PHASES = tuple(
    phase
    for phase in Phase
    if phase is not Phase.shrink or os.environ.get("HYPOTHESIS_SHRINK") == "1"
)


def test_job_lifecycle_holds_under_random_operations(store_url: str) -> None:
    with StoreRunner(store_url) as sr:
        machine = make_machine(sr)
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=60,
                stateful_step_count=50,
                deadline=None,
                database=None,
                phases=PHASES,
                suppress_health_check=[
                    HealthCheck.function_scoped_fixture,
                    HealthCheck.too_slow,
                    HealthCheck.filter_too_much,
                ],
            ),
        )


def test_the_model_sees_a_broken_fence(store_url: str) -> None:
    """A positive control: the machine's invariant fails when a job leaves the model behind
    (here a completion the model was not told about), so the property can fail at all."""
    with StoreRunner(store_url) as sr:
        machine = make_machine(sr)()
        machine.start_empty()
        machine.enqueue("a", 0, 1, 0, 1)
        machine.claim("n1", ["a"], 1)
        machine.the_store_matches_the_model_and_only_legal_edges_were_taken()
        (token,) = machine.tokens
        done = JobResult(token.job_id, token.attempt, token.owner, Outcome.COMPLETED)
        assert sr.run(sr.store.complete_job(done, now=machine.now)) is True
        with pytest.raises(AssertionError):
            machine.the_store_matches_the_model_and_only_legal_edges_were_taken()
        machine.teardown()
