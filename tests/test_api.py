"""The HTTP API over real HTTP (uvicorn), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.live_server import LiveServer, live_server

TOKEN = "s3cret-token-for-tests-0123"


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(store_url, tmp_path / "data") as live:
        (live.config.templates_path).mkdir(parents=True)
        yield live


@pytest.fixture
def secured(sqlite_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    # Wrong tokens answered 401 every time: the throttle has tests of its own.
    unthrottled = {"auth_failures": 1_000_000}
    with live_server(sqlite_url, tmp_path / "data", token=TOKEN, server=unthrottled) as live:
        yield live


def rows(url: str, table: str) -> int:
    """Count rows straight from the database, bypassing the service."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            (n,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        finally:
            conn.close()
        return int(n)
    with psycopg.connect(url) as pconn:
        row = pconn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def nothing_stored(url: str) -> bool:
    return all(
        rows(url, t) == 0 for t in ("jobyard_jobs", "jobyard_workspaces", "jobyard_sessions")
    )


def wait_for_state(client: httpx.Client, path: str, within: float = 15) -> dict[str, Any]:
    """Poll a workspace or session until it settles (ready or failed)."""
    deadline = time.monotonic() + within
    while True:
        body: dict[str, Any] = client.get(path).json()
        if body["status"] in ("ready", "failed"):
            return body
        assert time.monotonic() < deadline, f"{path} stuck in {body['status']}"
        time.sleep(0.05)


def test_workspace_from_a_template_then_a_session_become_ready_with_files(
    server: LiveServer,
) -> None:
    template = server.config.templates_path / "starter"
    template.mkdir()
    (template / "hello.txt").write_text("hello\n")
    with server.client() as http:
        created = http.post("/api/workspaces", json={"name": "demo", "template": "starter"})
        assert created.status_code == 202, created.text
        ws = created.json()["workspace"]
        assert created.json()["job"]["type"] == "workspace_init"
        assert created.json()["job"]["payload"] == {"workspaceId": ws["id"]}
        assert wait_for_state(http, f"/api/workspaces/{ws['id']}")["status"] == "ready"
        made = http.post(f"/api/workspaces/{ws['id']}/sessions")
        assert made.status_code == 202, made.text
        session = made.json()["session"]
        assert made.json()["job"]["payload"] == {"sessionId": session["id"]}
        assert wait_for_state(http, f"/api/sessions/{session['id']}")["status"] == "ready"
    root = server.config.data_dir / "workspaces" / ws["id"]
    assert (root / "hello.txt").read_text() == "hello\n"
    assert (root / ".jobyard" / "sessions" / session["id"] / "state.json").is_file()


def test_failed_template_fails_its_session_and_retry_after_the_fix_succeeds(
    server: LiveServer,
) -> None:
    with server.client() as http:
        created = http.post(
            "/api/workspaces", json={"name": "broken", "template": "missing"}
        ).json()
        ws, job = created["workspace"], created["job"]
        session = http.post(f"/api/workspaces/{ws['id']}/sessions").json()["session"]
        failed = wait_for_state(http, f"/api/workspaces/{ws['id']}")
        assert failed["status"] == "failed"
        assert "'missing' does not exist" in failed["error"]
        failed_session = wait_for_state(http, f"/api/sessions/{session['id']}")
        assert failed_session["status"] == "failed"
        assert f"workspace {ws['id']} failed" in failed_session["error"]

        deadline = time.monotonic() + 15
        while http.get(f"/api/jobs/{job['id']}").json()["status"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (server.config.templates_path / "missing").mkdir()
        retried = http.post(f"/api/jobs/{job['id']}/retry")
        assert retried.status_code == 200
        assert retried.json()["status"] == "pending"
        while http.get(f"/api/jobs/{job['id']}").json()["status"] != "completed":
            assert time.monotonic() < deadline + 15
            time.sleep(0.05)
        assert http.get(f"/api/workspaces/{ws['id']}").json()["status"] == "ready"


def test_jobs_are_enqueued_listed_with_keyset_pages_and_cancelled(server: LiveServer) -> None:
    with server.client() as http:
        ids = []
        for i in range(5):
            later = "2099-01-01T00:00:00Z"  # not due: they stay pending
            r = http.post(
                "/api/jobs",
                json={
                    "type": "workspace_init",
                    "payload": {"workspaceId": f"w{i}"},
                    "run_at": later,
                },
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        first = http.get("/api/jobs", params={"limit": 2, "type": "workspace_init"}).json()
        assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
        second = http.get("/api/jobs", params={"limit": 2, "after": first["next"]}).json()
        assert [j["id"] for j in second["jobs"]] == ids[::-1][2:4]
        last = http.get("/api/jobs", params={"limit": 2, "after": second["next"]}).json()
        assert [j["id"] for j in last["jobs"]] == [ids[0]]
        assert last["next"] is None

        cancelled = http.post(f"/api/jobs/{ids[0]}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        again = http.post(f"/api/jobs/{ids[0]}/cancel")  # this call changes nothing: 409
        assert (again.status_code, again.json()) == (
            409,
            {"detail": f"job {ids[0]} is already cancelled"},
        )
        done = http.post("/api/workspaces", json={"name": "quick"}).json()
        wait_for_state(http, f"/api/workspaces/{done['workspace']['id']}")
        deadline = time.monotonic() + 10
        while http.get(f"/api/jobs/{done['job']['id']}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert http.post(f"/api/jobs/{done['job']['id']}/cancel").status_code == 409
        pending = http.get("/api/jobs", params={"status": "pending"}).json()["jobs"]
        assert ids[0] not in [j["id"] for j in pending]
        assert http.post(f"/api/jobs/{ids[1]}/retry").status_code == 409  # not failed
        assert http.get("/api/jobs/999999").status_code == 404
        assert http.post("/api/jobs/999999/cancel").status_code == 404


def test_status_shows_leader_nodes_and_limits(server: LiveServer) -> None:
    with server.client() as http:
        deadline = time.monotonic() + 10
        while (status := http.get("/api/status").json())["leader"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert status["leader"]["node_id"] == server.runtime.dispatcher.node_id
    assert [n["node_id"] for n in status["nodes"]] == [server.runtime.dispatcher.node_id]
    limits = {t["type"]: t["limit"] for t in status["types"]}
    assert limits["workspace_init"] == 5
    assert limits["session_init"] == 10
    assert status["unserved"] == []


def test_health_metrics_and_openapi(server: LiveServer) -> None:
    with server.client() as http:
        http.post("/api/workspaces", json={"name": "m"})
        assert http.get("/healthz").json()["status"] == "ok"
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert 'jobyard_jobs{status="' in metrics.text or "jobyard_jobs{" in metrics.text
        assert "jobyard_is_leader" in metrics.text
        assert "jobyard_job_wait_seconds" in metrics.text
        spec = http.get("/openapi.json").json()
        assert "/api/workspaces" in spec["paths"]
        assert "/api/jobs/{job_id}/retry" in spec["paths"]


# -- refusals: nothing is stored for any of them ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/api/jobs", {"type": "nope", "payload": {}}, 422),
        ("/api/jobs", {"type": "workspace_init", "payload": {"workspaceId": 5}}, 422),
        ("/api/jobs", {"type": "workspace_init", "payload": {"wrong": "x"}}, 422),
        ("/api/jobs", {"type": "workspace_init", "payload": {"workspaceId": "a"}, "x": 1}, 422),
        ("/api/jobs", {"type": "workspace_init", "priority": 2**40}, 422),
        ("/api/jobs", {"type": "workspace_init", "max_attempts": 0}, 422),
        ("/api/jobs", {"type": "x' OR 1=1; DROP TABLE jobyard_jobs; --"}, 422),
        ("/api/workspaces", {"name": "../etc"}, 422),
        ("/api/workspaces", {"name": "ok", "template": "../../etc"}, 422),
        ("/api/workspaces", {"name": "ok", "template": "/etc"}, 422),
        ("/api/workspaces", {}, 422),
        ("/api/workspaces/ws_missing/sessions", None, 404),
    ],
)
def test_bad_requests_are_refused_with_a_reason_and_store_nothing(
    server: LiveServer, store_url: str, path: str, body: Any, code: int
) -> None:
    with server.client() as http:
        response = http.post(path, json=body)
    assert response.status_code == code, response.text
    assert response.json()["detail"]
    assert nothing_stored(store_url)


def test_oversize_bodies_and_payloads_answer_413(server: LiveServer, store_url: str) -> None:
    big = "x" * (3 * 1024 * 1024)
    with server.client() as http:
        r1 = http.post(
            "/api/jobs", json={"type": "workspace_init", "payload": {"workspaceId": big}}
        )
        assert r1.status_code == 413
        r2 = http.post(
            "/api/jobs",
            # A generator body goes out chunked: no Content-Length to refuse it by up front.
            content=(b"x" * 65536 for _ in range(48)),
            headers={"content-type": "application/json"},
        )
        assert r2.status_code == 413
    assert nothing_stored(store_url)


def test_malformed_json_and_queries_are_422(server: LiveServer, store_url: str) -> None:
    with server.client() as http:
        bad_json = http.post(
            "/api/jobs", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 422
        nan = http.post(
            "/api/jobs",
            content=b'{"type": "workspace_init", "payload": {"workspaceId": NaN}}',
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 422
        assert http.get("/api/jobs", params={"limit": 10**9}).status_code == 422
        assert http.get("/api/jobs", params={"after": "1; DROP TABLE x"}).status_code == 422
        assert http.get("/api/jobs", params={"status": "'; --"}).status_code == 422
    assert nothing_stored(store_url)


# -- authentication --------------------------------------------------------------------------


def test_every_api_route_needs_the_token_when_one_is_set(secured: LiveServer) -> None:
    spec = secured.client().get("/openapi.json").json()
    api_routes = [
        (
            method,
            path.replace("{job_id}", "1")
            .replace("{workspace_id}", "ws_x")
            .replace("{session_id}", "se_x"),
        )
        for path, methods in spec["paths"].items()
        if path.startswith("/api")
        for method in methods
    ]
    assert len(api_routes) >= 10
    with (
        secured.client(token=None) as anonymous,
        secured.client(token="wrong-token-123456") as wrong,
    ):
        for method, path in api_routes:
            for http in (anonymous, wrong):
                response = http.request(method.upper(), path, json={})
                assert response.status_code == 401, (method, path, response.status_code)
                assert response.headers["www-authenticate"] == "Bearer"
    with secured.client() as authorized:
        assert authorized.get("/api/status").status_code == 200
        assert authorized.get("/healthz").status_code == 200
        assert TOKEN not in authorized.get("/metrics").text


def test_without_a_token_only_loopback_host_names_are_served(server: LiveServer) -> None:
    with server.client() as http:
        assert http.get("/api/status").status_code == 200
        rebinding = http.get("/api/status", headers={"Host": "attacker.example"})
        assert rebinding.status_code == 400
