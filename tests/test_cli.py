"""The `jobyard` command line, run in-process with Typer's CliRunner on real databases, plus
one real worker process that is stopped with SIGTERM.

Errors are checked for the contract the CLI promises: exactly one `error:` line on stderr, no
traceback, exit code 2 when the input was refused (and nothing stored), 1 when the operation
failed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

import jobyard.api.server
from jobyard import Job, JobAdmin, Queue, open_store
from jobyard.api.settings import ServerSettings
from jobyard.cli import app
from jobyard.cli.errors import CliError
from jobyard.cli.waiting import Settled, wait_for
from jobyard.config import Config
from jobyard.store.records import ClaimParams, JobResult, Outcome
from jobyard.workspaces.entities import EntityStatus, NewWorkspace
from jobyard.workspaces.store import open_workspace_store

T = TypeVar("T")

runner = CliRunner()


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own data dir, no token, no stray JOBYARD_* settings from the shell,
    and fast retries so failing jobs reach their final state quickly."""
    for name in list(os.environ):
        if name.startswith("JOBYARD_") and name != "JOBYARD_TEST_PG":
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("JOBYARD_DATA_DIR", str(data_dir))
    monkeypatch.setenv("JOBYARD_RETRY_BACKOFF", "0.01")
    monkeypatch.setenv("JOBYARD_JOB_POLL_INTERVAL", "0.1")
    monkeypatch.setenv("JOBYARD_SHUTDOWN_GRACE_PERIOD", "1")
    return data_dir


def cli(url: str, *args: str) -> Result:
    return runner.invoke(app, ["--database-url", url, *args])


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (
        f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def error_line(result: Result, code: int) -> str:
    """The single `error:` line of a failed command (asserting there is exactly one)."""
    assert result.exit_code == code, (
        f"exit {result.exit_code}, wanted {code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0] == result.stderr.splitlines()[-1]
    return errors[0]


def eventually(check: Callable[[], T | None], what: str, within: float = 30.0) -> T:
    """Poll `check` until it returns something truthy, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        time.sleep(0.1)


def jobs(url: str, *args: str) -> list[dict[str, Any]]:
    page = as_json(cli(url, "jobs", "list", "--json", *args))
    listed: list[dict[str, Any]] = page["jobs"]
    return listed


# -- migrate, enqueue, jobs ------------------------------------------------------------------
def test_migrate_prints_the_schema_version_and_is_repeatable(store_url: str) -> None:
    first = ok(cli(store_url, "migrate")).stdout.strip()
    second = ok(cli(store_url, "migrate")).stdout.strip()
    assert first == second
    engine, platform = first.split(": ", 1)[1].split(", ")
    assert int(engine.removeprefix("schema version ")) >= 4
    assert platform == "workspaces schema version 1"


def test_migrate_creates_a_fresh_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    ok(cli(f"sqlite:///{path}", "migrate"))
    assert path.is_file()


def test_enqueue_then_list_and_show(store_url: str) -> None:
    job = as_json(
        cli(
            store_url,
            "enqueue",
            "workspace_init",
            "--payload",
            '{"workspaceId": "ws_1"}',
            "--priority",
            "7",
            "--max-attempts",
            "2",
            "--json",
        )
    )
    assert job["type"] == "workspace_init"
    assert job["payload"] == {"workspaceId": "ws_1"}
    assert (job["status"], job["priority"], job["max_attempts"], job["attempt"]) == (
        "pending",
        7,
        2,
        0,
    )

    plain = ok(cli(store_url, "enqueue", "session_init", "-p", '{"sessionId": "se_1"}'))
    second_id = int(plain.stdout.strip())  # only the id, for scripts
    assert second_id > job["id"]

    listed = jobs(store_url)
    assert [j["id"] for j in listed] == [second_id, job["id"]]  # newest first
    assert [j["id"] for j in jobs(store_url, "--type", "workspace_init")] == [job["id"]]
    assert jobs(store_url, "--status", "completed") == []

    shown = as_json(cli(store_url, "jobs", "show", str(job["id"]), "--json"))
    assert shown == job

    table = ok(cli(store_url, "jobs", "list")).stdout
    assert "workspace_init" in table
    assert "session_init" in table
    assert str(second_id) in table
    assert "ws_1" in ok(cli(store_url, "jobs", "show", str(job["id"]))).stdout


def test_enqueue_run_in_schedules_later(sqlite_url: str) -> None:
    job = as_json(
        cli(
            sqlite_url,
            "enqueue",
            "session_init",
            "-p",
            '{"sessionId": "se_1"}',
            "--run-in",
            "3600",
            "--json",
        )
    )
    from datetime import datetime, timedelta

    run_at = datetime.fromisoformat(job["run_at"])
    created = datetime.fromisoformat(job["created_at"])
    assert timedelta(minutes=59) < run_at - created < timedelta(minutes=61)


def test_jobs_list_pages_with_a_cursor(sqlite_url: str) -> None:
    ids = [
        int(
            ok(
                cli(sqlite_url, "enqueue", "session_init", "-p", f'{{"sessionId": "se_{n}"}}')
            ).stdout
        )
        for n in range(3)
    ]
    first = as_json(cli(sqlite_url, "jobs", "list", "--limit", "2", "--json"))
    assert [j["id"] for j in first["jobs"]] == [ids[2], ids[1]]
    assert first["next"] == str(ids[1])
    rest = as_json(
        cli(sqlite_url, "jobs", "list", "--limit", "2", "--after", first["next"], "--json")
    )
    assert [j["id"] for j in rest["jobs"]] == [ids[0]]
    assert rest["next"] is None


def test_unknown_job_type_is_refused_and_nothing_is_stored(store_url: str) -> None:
    result = cli(store_url, "enqueue", "no_such_type", "--payload", "{}")
    line = error_line(result, 2)
    assert "no_such_type" in line
    assert "workspace_init" in line  # says what would have worked
    assert jobs(store_url) == []


def test_bad_json_payload_is_a_clear_error(sqlite_url: str) -> None:
    line = error_line(cli(sqlite_url, "enqueue", "workspace_init", "--payload", "{oops"), 2)
    assert line.startswith("error: --payload is not valid JSON")
    assert jobs(sqlite_url) == []


def test_payload_that_does_not_fit_its_model_is_refused(sqlite_url: str) -> None:
    line = error_line(cli(sqlite_url, "enqueue", "workspace_init", "--payload", '{"x": 1}'), 2)
    assert "workspaceId" in line
    assert jobs(sqlite_url) == []


def test_cancel_and_retry_change_the_state(store_url: str) -> None:
    job_id = ok(cli(store_url, "enqueue", "session_init", "-p", '{"sessionId": "se_1"}')).stdout
    job_id = job_id.strip()

    assert ok(cli(store_url, "jobs", "cancel", job_id)).stdout.strip() == f"job {job_id} cancelled"
    assert as_json(cli(store_url, "jobs", "show", job_id, "--json"))["status"] == "cancelled"
    # A second cancel changes nothing, and says so with exit 1.
    assert error_line(cli(store_url, "jobs", "cancel", job_id), 1) == (
        f"error: job {job_id} is already cancelled"
    )

    retried = as_json(cli(store_url, "jobs", "retry", job_id, "--json"))
    assert (retried["status"], retried["attempt"]) == ("pending", 0)
    assert as_json(cli(store_url, "jobs", "show", job_id, "--json"))["status"] == "pending"
    again = cli(store_url, "jobs", "retry", job_id)
    assert error_line(again, 1) == f"error: job {job_id} is already pending"
    assert again.stdout == ""


def test_failed_job_cannot_be_cancelled_but_can_be_retried(sqlite_url: str) -> None:
    result = cli(
        sqlite_url, "enqueue", "workspace_init", "-p", '{"workspaceId": "ws_gone"}', "--run"
    )
    assert "ws_gone" in error_line(result, 1)  # permanent failure: the workspace does not exist
    (job,) = jobs(sqlite_url)
    assert (job["status"], job["attempt"]) == ("failed", 1)  # no retries for a permanent error
    job_id = str(job["id"])

    assert "is failed; only pending" in error_line(cli(sqlite_url, "jobs", "cancel", job_id), 1)
    assert ok(cli(sqlite_url, "jobs", "retry", job_id)).stdout.strip() == (
        f"job {job_id} is pending again"
    )
    shown = as_json(cli(sqlite_url, "jobs", "show", job_id, "--json"))
    assert (shown["status"], shown["attempt"]) == ("pending", 0)


@pytest.mark.parametrize("command", ["show", "cancel", "retry"])
def test_missing_job_is_one_line(sqlite_url: str, command: str) -> None:
    assert error_line(cli(sqlite_url, "jobs", command, "424242"), 1) == (
        "error: job 424242 does not exist"
    )


# -- status --------------------------------------------------------------------------------
def test_status_json_shows_limits_counts_and_unserved_types(store_url: str) -> None:
    ok(cli(store_url, "enqueue", "workspace_init", "-p", '{"workspaceId": "ws_1"}'))
    status = as_json(cli(store_url, "status", "--json"))
    assert status["leader"] is None
    assert status["nodes"] == []
    types = {t["type"]: t for t in status["types"]}
    assert types["workspace_init"]["limit"] == 5
    assert types["session_init"]["limit"] == 10
    assert types["workspace_init"]["counts"]["pending"] == 1
    assert types["workspace_init"]["running"] == 0
    assert types["workspace_init"]["served"] is False
    assert status["unserved"] == ["workspace_init"]

    text = ok(cli(store_url, "status")).stdout
    assert "leader: none" in text
    assert "workspace_init" in text
    assert "no live node serves them" in text


# -- workspaces and sessions ---------------------------------------------------------------
def test_workspace_and_session_run_and_wait_to_ready(store_url: str, data_dir: Path) -> None:
    created = as_json(cli(store_url, "workspaces", "create", "demo", "--run", "--wait", "--json"))
    workspace = created["workspace"]
    assert workspace["name"] == "demo"
    assert workspace["status"] == "ready"
    assert created["job"]["status"] == "completed"
    folder = data_dir / "workspaces" / workspace["id"]
    assert (folder / ".jobyard" / "workspace.json").is_file()
    completed = str(created["job"]["id"])
    assert "only failed or cancelled" in error_line(cli(store_url, "jobs", "retry", completed), 1)
    assert "only pending" in error_line(cli(store_url, "jobs", "cancel", completed), 1)

    session_id = ok(cli(store_url, "sessions", "create", workspace["id"], "--run", "--wait"))
    session_id_text = session_id.stdout.strip()
    assert session_id_text.startswith("se_")
    session = as_json(cli(store_url, "sessions", "show", session_id_text, "--json"))
    assert (session["status"], session["workspace_id"]) == ("ready", workspace["id"])
    assert (folder / ".jobyard" / "sessions" / session_id_text / "state.json").is_file()
    assert as_json(cli(store_url, "status", "--json"))["nodes"] == []  # the node drained


def test_failing_template_exits_non_zero_with_the_reason(sqlite_url: str, data_dir: Path) -> None:
    result = cli(sqlite_url, "workspaces", "create", "demo", "--template", "missing", "--run")
    line = error_line(result, 1)
    assert "failed" in line
    assert "template 'missing' does not exist" in line
    (job,) = jobs(sqlite_url)
    # It waited for the retries: the failure is final, not the first attempt's.
    assert (job["status"], job["attempt"]) == ("failed", job["max_attempts"])
    assert not (data_dir / "workspaces").exists() or not any(
        p.name.startswith("ws_") for p in (data_dir / "workspaces").iterdir()
    )


def test_session_of_missing_workspace_is_refused(sqlite_url: str) -> None:
    line = error_line(cli(sqlite_url, "sessions", "create", "ws_nope"), 1)
    assert "ws_nope" in line
    assert jobs(sqlite_url) == []


def test_invalid_workspace_name_is_refused(sqlite_url: str) -> None:
    line = error_line(cli(sqlite_url, "workspaces", "create", "../etc"), 2)
    assert "name" in line
    assert jobs(sqlite_url) == []


def test_wait_without_a_worker_hints_and_times_out(sqlite_url: str) -> None:
    result = cli(sqlite_url, "workspaces", "create", "demo", "--wait", "--timeout", "0.5")
    line = error_line(result, 1)
    assert "not done after 0.5s: pending" in line
    assert "no worker is running" in line
    assert "no worker is running" in result.stderr.split("error:")[0]  # the early hint


# -- the wait loop -----------------------------------------------------------------------------
async def test_the_wait_loop_asks_the_callers_settle_step_and_reads_through_the_admin(
    sqlite_url: str,
) -> None:
    """What the platform's commands rely on: `wait_for` hands each poll's job to the caller's
    settle step, and reports its failure, or its last state on a timeout, in one line."""
    store = open_store(sqlite_url)
    try:
        queue = Queue(store)
        queue.declare("email")
        job = await queue.enqueue("email", {"to": "ada@example.com"})
        admin = JobAdmin(store)
        shown = io.StringIO()
        console = Console(file=shown, highlight=False)
        polled: list[int | None] = []

        async def third_time(current: Job | None) -> Settled:
            polled.append(current.id if current is not None else None)
            return Settled(len(polled) == 3, None, f"poll {len(polled)}")

        async def building(current: Job | None) -> Settled:
            return Settled(False, None, "still building")

        async def broken(current: Job | None) -> Settled:
            return Settled(True, "the disk is full", "failed")

        def waiting(
            settle: Callable[[Job | None], Awaitable[Settled]], seconds: float
        ) -> Awaitable[None]:
            return wait_for(
                admin,
                console,
                label="thing 1",
                job_id=job.id,
                job_type="email",
                seconds=seconds,
                settle=settle,
            )

        await waiting(third_time, 30)
        assert polled == [job.id, job.id, job.id]
        assert "thing 1: poll 2" in shown.getvalue()
        assert "hint: no worker is running" in shown.getvalue()  # nothing serves `email`
        with pytest.raises(CliError) as timed_out:
            await waiting(building, 0.3)
        assert str(timed_out.value) == (
            "thing 1 is not done after 0.3s: still building; no worker is running: start "
            "`jobyard worker` or `jobyard serve`, or pass --run"
        )
        with pytest.raises(CliError) as failed:
            await waiting(broken, 30)
        assert str(failed.value) == "thing 1 failed: the disk is full"
    finally:
        await store.close()


# -- configuration and connection errors -----------------------------------------------------
def test_serve_beyond_loopback_without_token_is_one_line(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    monkeypatch.setattr(jobyard.api.server, "serve", lambda *a, **k: started.append(a))
    result = cli(sqlite_url, "serve", "--host", "0.0.0.0")
    line = error_line(result, 2)
    assert "0.0.0.0" in line
    assert "JOBYARD_API_TOKEN" in line
    assert started == []
    assert "dashboard" not in result.stdout


def test_serve_prints_the_dashboard_url_and_passes_settings(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Config, ServerSettings, bool, list[int]]] = []

    def fake_serve(
        config: Config,
        settings: ServerSettings,
        *,
        run_worker: bool = True,
        sockets: Sequence[socket.socket] = (),
    ) -> None:
        calls.append((config, settings, run_worker, [s.getsockname()[1] for s in sockets]))

    monkeypatch.setattr(jobyard.api.server, "serve", fake_serve)
    # Port 0: the system picks a free one, and the URL shows the port actually bound.
    result = ok(cli(sqlite_url, "serve", "--port", "0", "--no-worker"))
    ((config, settings, run_worker, ports),) = calls
    assert config.database_url == sqlite_url
    assert (settings.host, settings.port, run_worker) == ("127.0.0.1", 0, False)
    assert len(ports) == 1
    assert ports[0] > 0
    assert result.stdout.splitlines()[0] == f"jobyard dashboard: http://127.0.0.1:{ports[0]}/"


def test_serve_refuses_a_token_padded_with_spaces(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepted, it would refuse every bearer token: HTTP strips the spaces around a header."""
    started: list[object] = []
    monkeypatch.setattr(jobyard.api.server, "serve", lambda *a, **k: started.append(a))
    monkeypatch.setenv("JOBYARD_API_TOKEN", " abcdefghijklmnop ")
    line = error_line(cli(sqlite_url, "serve"), 2)
    assert line.startswith("error: invalid server settings: JOBYARD_API_TOKEN: must not start")
    assert "abcdefghijklmnop" not in line
    assert started == []


def test_serve_whose_app_fails_to_start_is_one_line(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn exits with status 3 when the app's startup fails; the CLI says so in its own
    words and with a documented status."""

    async def failing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no schema for you"})

    monkeypatch.setattr(jobyard.api.server, "create_app", lambda *a, **k: failing_app)
    line = error_line(cli(sqlite_url, "serve", "--port", "0"), 1)
    assert line == "error: the server did not start: see the log above"


def test_unreachable_postgres_is_one_line(sqlite_url: str) -> None:
    started = time.monotonic()
    result = cli("postgresql://postgres@127.0.0.1:1/jobyard", "status")
    line = error_line(result, 1)
    assert "127.0.0.1" in line
    assert time.monotonic() - started < 15  # fails fast, not after the pool's 30 s


def test_sqlite_file_in_a_new_folder_is_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new/folder/x.db"
    ok(cli(url, "enqueue", "session_init", "-p", '{"sessionId": "se_1"}'))
    assert (tmp_path / "new" / "folder" / "x.db").is_file()


def test_unusable_sqlite_path_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    line = error_line(cli(f"sqlite:///{tmp_path}/a-file/x.db", "jobs", "list"), 1)
    assert line.startswith(f"error: cannot use sqlite:///{tmp_path}/a-file/x.db")


def test_sqlite_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    line = error_line(cli(f"sqlite:///{tmp_path}/junk.db", "jobs", "list"), 1)
    assert line.startswith(f"error: database error on sqlite:///{tmp_path}/junk.db")


def test_bad_setting_is_a_config_error(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBYARD_CONCURRENCY", "0")
    assert "JOBYARD_CONCURRENCY" in error_line(cli(sqlite_url, "status"), 2)
    assert "database_url" in error_line(cli("mysql://x", "status"), 2)


def test_database_url_comes_from_thedata_dir(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBYARD_DATABASE_URL", sqlite_url)
    ok(runner.invoke(app, ["enqueue", "session_init", "-p", '{"sessionId": "se_1"}']))
    assert len(jobs(sqlite_url)) == 1
    monkeypatch.setenv("JOBYARD_DATABASE_URL", "mysql://nope")
    line = error_line(runner.invoke(app, ["status"]), 2)
    assert "JOBYARD_DATABASE_URL" in line  # names the setting the way the user gave it


def test_version_and_usage_errors(sqlite_url: str) -> None:
    assert ok(runner.invoke(app, ["--version"])).stdout.startswith("jobyard ")
    bad_status = cli(sqlite_url, "jobs", "list", "--status", "bogus")
    assert bad_status.exit_code == 2
    assert "Traceback" not in bad_status.output
    assert "bogus" in bad_status.stderr
    assert "does not exist" in error_line(cli(sqlite_url, "workspaces", "show", "ws_nope"), 1)


# -- real processes ------------------------------------------------------------------------
def _jobyard_command() -> list[str]:
    script = Path(sys.executable).parent / "jobyard"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "jobyard.cli"]


def test_python_dash_m_runs_the_cli(sqlite_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobyard.cli", "--database-url", sqlite_url, "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "schema version" in done.stdout


@pytest.fixture
def worker_env(store_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "JOBYARD_DATABASE_URL": store_url,
        "JOBYARD_DATA_DIR": str(data_dir),
        "JOBYARD_JOB_POLL_INTERVAL": "0.2",
        "JOBYARD_HEARTBEAT_INTERVAL": "0.3",
        "JOBYARD_LEADER_LEASE_DURATION": "1.5",
    }


@pytest.fixture
def worker_process(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*_jobyard_command(), "worker"], stdout=log, stderr=log, env=worker_env
        )
    try:
        yield proc, log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_worker_process_runs_jobs_and_drains_on_sigterm(
    store_url: str,
    data_dir: Path,
    worker_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, log_path = worker_process

    def alive_nodes() -> list[dict[str, Any]] | None:
        assert proc.poll() is None, log_path.read_text()
        nodes: list[dict[str, Any]] = as_json(cli(store_url, "status", "--json"))["nodes"]
        return nodes

    (node,) = eventually(alive_nodes, "the worker to register")
    assert node["pid"] == proc.pid

    created = as_json(cli(store_url, "workspaces", "create", "demo", "--json"))
    workspace_id = created["workspace"]["id"]
    job_id = ok(
        cli(store_url, "enqueue", "workspace_init", "-p", json.dumps({"workspaceId": workspace_id}))
    ).stdout.strip()

    def completed(job: str) -> bool:
        assert proc.poll() is None, log_path.read_text()
        return bool(as_json(cli(store_url, "jobs", "show", job, "--json"))["status"] == "completed")

    eventually(lambda: completed(job_id), f"job {job_id} to complete")
    eventually(lambda: completed(str(created["job"]["id"])), "the workspace job to complete")
    shown = as_json(cli(store_url, "workspaces", "show", workspace_id, "--json"))
    assert shown["status"] == "ready"
    assert (data_dir / "workspaces" / workspace_id / ".jobyard" / "workspace.json").is_file()

    # --wait sees the live worker: no hint, and it ends when the job is done.
    waited = ok(cli(store_url, "sessions", "create", workspace_id, "--wait", "--timeout", "30"))
    assert "no worker is running" not in waited.stderr

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log_path.read_text()
    log = log_path.read_text()
    assert "received SIGTERM" in log
    assert "Traceback" not in log
    assert as_json(cli(store_url, "status", "--json"))["nodes"] == []  # removed on drain


# -- jobyard serve as a real process ---------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_drains_and_exits_0_on_sigterm(sqlite_url: str, tmp_path: Path) -> None:
    """uvicorn re-raises the signal it caught once it has shut down, which made the process die
    of SIGTERM (status 143) after a clean drain; `jobyard serve` exits 0, as documented."""
    port = _free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "JOBYARD_DATABASE_URL": sqlite_url}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*_jobyard_command(), "serve", "--port", str(port)], stdout=log, stderr=log, env=env
        )
    try:

        def answers() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    return sock.recv(100).startswith(b"HTTP/1.1 200 ")
            except OSError:
                return False

        eventually(answers, "the server to answer")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    log = log_path.read_text()
    assert "Traceback" not in log
    assert "stopped" in log  # the node drained: jobyard.dispatcher logged it
    assert as_json(cli(sqlite_url, "status", "--json"))["nodes"] == []


def test_serve_on_a_port_in_use_says_so_before_anything_starts(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "jobyard.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*_jobyard_command(), "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "JOBYARD_DATABASE_URL": f"sqlite:///{database}"},
        )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.splitlines() == [f"error: port {port} is in use (try --port)"]
    assert done.stdout == ""  # no dashboard address: it would be the other program's
    assert not database.exists()  # the database was never opened, no node ever joined


# -- terminal safety -----------------------------------------------------------------------------
HOSTILE_TEXT = "evil\x1b[31m\nred\x07\x9b2J\u202egnp.exe"


def _plant(url: str) -> tuple[str, int]:
    """A workspace with a hostile template and a job with a hostile error, written straight
    into the store (as an older version, or another program, could have)."""

    async def plant() -> tuple[str, int]:
        store = open_store(url)
        try:
            queue = Queue(store)
            queue.declare("workspace_init")
            entities = open_workspace_store(store)
            (job,) = queue.build_jobs("workspace_init", [{"workspaceId": "ws_x"}])
            workspace, _ = await entities.create_workspace(
                NewWorkspace(id="ws_0123456789abcdef", name="plain", template=HOSTILE_TEXT), job
            )
            await entities.set_workspace_status(
                workspace.id, EntityStatus.FAILED, expect=[EntityStatus.PENDING], error=HOSTILE_TEXT
            )
            (claimed,) = await store.claim_jobs(ClaimParams("n1", ["workspace_init"], 1))
            await store.complete_job(
                JobResult(claimed.id, claimed.attempt, "n1", Outcome.FAILED, error=HOSTILE_TEXT)
            )
            return workspace.id, claimed.id
        finally:
            await store.close()

    return asyncio.run(plant())


def test_control_characters_in_stored_text_never_reach_the_terminal_raw(sqlite_url: str) -> None:
    workspace_id, job_id = _plant(sqlite_url)
    outputs = [
        ok(cli(sqlite_url, "workspaces", "show", workspace_id)).stdout,
        ok(cli(sqlite_url, "jobs", "show", str(job_id))).stdout,
        ok(cli(sqlite_url, "jobs", "list")).stdout,
    ]
    for out in outputs:
        assert "\x1b" not in out
        assert "\x07" not in out
        assert "\x9b" not in out
        assert "\u202e" not in out
        assert "\\x1b[31m" in out
    # The table keeps one line per field: the newline is shown, not obeyed.
    shown = outputs[0]
    assert "\\n" in shown
    (template_line,) = [line for line in shown.splitlines() if "template" in line]
    assert "evil\\x1b[31m\\nred" in template_line
