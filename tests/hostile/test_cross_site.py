"""No web page can change state on a jobyard server: every state-changing route, API and
dashboard alike, bodyless POSTs included, refuses a request that a browser marks as coming from
another site, with or without a token. Tools that send neither header keep working.

The routes are enumerated from the app itself, so a state-changing route added later is covered
without being listed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import httpx
import pytest

from jobyard.api.security import SAFE_METHODS, is_cross_site
from tests.hostile.test_auth_and_secrets import all_routes
from tests.live_server import LiveServer, live_server
from tests.test_api import wait_for_state

TOKEN: Final = "cross-site-test-token-0123456789"
LATER: Final = "2099-01-01T00:00:00Z"

# What a browser sends with a request from a page of another site (or another origin).
CROSS_SITE: Final[dict[str, dict[str, str]]] = {
    "fetch-site cross-site": {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    "fetch-site same-site": {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"},
    "origin only": {"Origin": "https://evil.example"},
    "origin null": {"Origin": "null"},
    "origin on another port": {"Origin": "http://127.0.0.1:1"},
    "fetch-site beats a forged same origin": {"Sec-Fetch-Site": "cross-site", "Origin": "{self}"},
}


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["no-token", "token"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("cross-site")
    token: str | None = request.param
    with live_server(f"sqlite:///{root / 'jobyard.db'}", root / "data", token=token) as live:
        live.config.templates_path.mkdir(parents=True, exist_ok=True)
        yield live


def state_changing_routes(server: LiveServer) -> list[tuple[str, str]]:
    routes = sorted(r for r in all_routes(server) if r[0] not in SAFE_METHODS)
    # The API's and the dashboard's actions, bodyless ones included, must all be here.
    assert {
        ("POST", "/api/jobs/{job_id}/cancel"),
        ("POST", "/api/jobs/{job_id}/retry"),
        ("POST", "/api/workspaces/{workspace_id}/sessions"),
        ("POST", "/api/workspaces"),
        ("POST", "/api/jobs"),
        ("POST", "/ui/jobs/{job_id}/cancel"),
        ("POST", "/ui/workspaces"),
        ("POST", "/ui/logout"),
    } <= set(routes)
    return routes


def snapshot(http: httpx.Client) -> tuple[object, ...]:
    """Everything an action could change, read through the API."""
    jobs = http.get("/api/jobs", params={"limit": 500}).json()["jobs"]
    workspaces = http.get("/api/workspaces", params={"limit": 500}).json()
    return (
        [(j["id"], j["status"], j["attempt"]) for j in jobs],
        [(w["id"], w["status"]) for w in workspaces],
    )


def test_every_state_changing_route_refuses_cross_site_requests(server: LiveServer) -> None:
    with server.client() as http:
        workspace = http.post("/api/workspaces", json={"name": "target"}).json()["workspace"]
        job = http.post(
            "/api/jobs",
            json={
                "type": "session_init",
                "payload": {"sessionId": "se_later"},
                "run_at": LATER,
            },
        ).json()
        values = {"{job_id}": str(job["id"]), "{workspace_id}": workspace["id"]}
        wait_for_state(http, f"/api/workspaces/{workspace['id']}")  # its build changes nothing
        before = snapshot(http)
        refused = []
        for method, route in state_changing_routes(server):
            path = route
            for placeholder, value in values.items():
                path = path.replace(placeholder, value)
            for name, headers in CROSS_SITE.items():
                sent = {k: v.replace("{self}", server.url) for k, v in headers.items()}
                # The body a cross-site HTML form would send; bodyless routes ignore it.
                response = http.request(
                    method,
                    path,
                    headers={**sent, "content-type": "application/x-www-form-urlencoded"},
                    content=b"name=csrf&token=x",
                )
                refused.append((method, route, name, response.status_code))
        assert {code for *_, code in refused} == {403}, [r for r in refused if r[3] != 403]
        assert snapshot(http) == before


def test_api_refusal_is_json_and_says_why(server: LiveServer) -> None:
    with server.client() as http:
        response = http.post("/api/jobs/1/cancel", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert response.json() == {"detail": "cross-site request refused"}


def test_tools_without_browser_headers_and_same_origin_pages_keep_working(
    server: LiveServer,
) -> None:
    allowed = {
        "a tool (curl, httpx, the CLI)": {},
        "a same-origin page": {"Sec-Fetch-Site": "same-origin", "Origin": server.url},
        "a same-origin page, Origin only": {"Origin": server.url},
        "a typed or bookmarked address": {"Sec-Fetch-Site": "none"},
    }
    with server.client() as http:
        for name, headers in allowed.items():
            body = {"type": "session_init", "payload": {"sessionId": "s"}, "run_at": LATER}
            job = http.post("/api/jobs", json=body, headers=headers)
            assert job.status_code == 202, name
            cancel = http.post(f"/api/jobs/{job.json()['id']}/cancel", headers=headers)
            assert cancel.status_code == 200, name
            workspace = http.post("/api/workspaces", json={"name": "mine"}, headers=headers)
            assert workspace.status_code == 202, name
            workspace_id = workspace.json()["workspace"]["id"]
            session = http.post(f"/api/workspaces/{workspace_id}/sessions", headers=headers)
            assert session.status_code == 202, name


@pytest.mark.parametrize(
    ("fetch_site", "origin", "host", "cross"),
    [
        (None, None, "127.0.0.1:8000", False),
        ("same-origin", None, "127.0.0.1:8000", False),
        ("none", None, "127.0.0.1:8000", False),
        ("SAME-ORIGIN", "https://evil.example", "127.0.0.1:8000", False),  # fetch-site decides
        ("same-site", None, "127.0.0.1:8000", True),
        ("cross-site", None, "127.0.0.1:8000", True),
        ("", None, "127.0.0.1:8000", True),
        (None, "http://127.0.0.1:8000", "127.0.0.1:8000", False),
        (None, "HTTP://LOCALHOST:8000", "localhost:8000", False),
        (None, "http://example.com", "example.com:80", False),
        (None, "https://example.com", "example.com", False),
        (None, "https://example.com", "example.com:80", True),
        (None, "http://[::1]:8000", "[::1]:8000", False),
        (None, "http://[::1]", "[::1]:8000", True),
        (None, "http://127.0.0.1:8001", "127.0.0.1:8000", True),
        (None, "null", "127.0.0.1:8000", True),
        (None, "file://", "127.0.0.1:8000", True),
        (None, "http://127.0.0.1:8000", None, True),
        (None, "not a url", "127.0.0.1:8000", True),
    ],
)
def test_cross_site_rule(
    fetch_site: str | None, origin: str | None, host: str | None, cross: bool
) -> None:
    assert is_cross_site(fetch_site, origin, host) is cross
