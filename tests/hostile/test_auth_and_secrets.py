"""With an API token set, nothing but the sign-in page, the static files and the operational
endpoints answers without it; the token is compared in constant time; and it never shows up in
logs, metrics, the schema, an error or a cookie.

Every route of the app is enumerated from the app itself, so a route added later without a
decision about who may call it fails `test_every_route_...` until it is classified here.
"""

from __future__ import annotations

import ast
import hmac
import inspect
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from starlette.routing import Route

import jobyard.api.app
import jobyard.api.dashboard
import jobyard.api.pages
import jobyard.api.routes
import jobyard.api.security
import jobyard.api.sessions
import jobyard.api.throttle
from jobyard.api import ServerSettings, create_app
from jobyard.api.dashboard import COOKIE
from jobyard.api.sessions import SignIns
from jobyard.model import ConfigError
from tests.hostile.helpers import send
from tests.live_server import LiveServer, live_server

# Random per run: if it shows up anywhere, it was leaked, not typed by a coincidence.
TOKEN: Final = f"hostile-{secrets.token_hex(16)}"
WRONG: Final = f"hostile-{secrets.token_hex(16)}"

# Who may call what without the token, and why. A route missing from both maps fails the test.
PUBLIC: Final[dict[tuple[str, str], str]] = {
    ("GET", "/ui/login"): "the sign-in page",
    ("POST", "/ui/login"): "signing in (checks the token itself)",
    ("POST", "/ui/logout"): "only ends the session its own cookie names",
    ("GET", "/ui/static/{name}"): "the page's own script, stylesheet and icon",
    ("GET", "/healthz"): "load balancer probe: status and node id only",
    ("GET", "/metrics"): "Prometheus scrape: counts per type and state, never job data",
    ("GET", "/openapi.json"): "the API's schema",
    ("GET", "/docs"): "the schema, rendered",
    ("GET", "/docs/oauth2-redirect"): "part of /docs",
    ("GET", "/redoc"): "the schema, rendered",
}
DASHBOARD_PAGES: Final = {("GET", "/")}  # a browser without the token is sent to sign in
PATH_VALUES: Final = {
    "{job_id}": "1",
    "{workspace_id}": "ws_0000000000000000",
    "{session_id}": "se_0000000000000000",
    "{name}": "live.js",
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("secured")
    # Every wrong token here must be answered as a wrong token, never throttled: the budget
    # of wrong tokens has tests of its own (tests/test_http_guards.py).
    unthrottled = {"auth_failures": 1_000_000}
    with live_server(
        f"sqlite:///{root / 'jobyard.db'}", root / "data", token=TOKEN, server=unthrottled
    ) as live:
        yield live


def signed_in_cookie(server: LiveServer) -> str:
    """A fresh session's cookie value, from signing in through the form."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        login = http.post("/ui/login", data={"token": TOKEN})
    assert login.status_code == 303, login.text
    value = login.cookies.get(COOKIE)
    assert value
    return value


def routes_of(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (method, path) an app serves, through included routers (which FastAPI may keep
    as their own route objects rather than copy into the app's list)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from routes_of(included.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield method, prefix + route.path
        else:  # pragma: no cover - a mount or websocket would need its own decision
            raise AssertionError(f"unclassified kind of route: {route!r}")


def all_routes(server: LiveServer) -> set[tuple[str, str]]:
    """The routes of the server's app: the engine's and its extensions' (the platform's)."""
    settings = ServerSettings(api_token=TOKEN)
    app = create_app(server.runtime, settings, run_worker=False, extensions=server.extensions)
    return set(routes_of(list(app.routes)))


def concrete(path: str) -> str:
    for placeholder, value in PATH_VALUES.items():
        path = path.replace(placeholder, value)
    assert "{" not in path, path
    return path


def test_every_route_is_classified_and_none_serves_content_without_the_token(
    secured: LiveServer,
) -> None:
    routes = all_routes(secured)
    assert len([r for r in routes if r[1].startswith("/api/")]) >= 11
    assert {("POST", "/ui/workspaces"), ("POST", "/ui/jobs/{job_id}/cancel")} <= routes
    unclassified = routes - PUBLIC.keys() - DASHBOARD_PAGES
    unclassified = {r for r in unclassified if not r[1].startswith(("/api/", "/ui/"))}
    assert not unclassified, f"decide who may call these: {sorted(unclassified)}"

    strangers = {
        "anonymous": {},
        "wrong bearer": {"Authorization": f"Bearer {WRONG}"},
        "wrong cookie": {"Cookie": f"{COOKIE}={WRONG}"},
        "token as basic auth": {"Authorization": f"Basic {TOKEN}"},
        "token without scheme": {"Authorization": TOKEN},
    }
    checked = 0
    with httpx.Client(base_url=secured.url, timeout=10) as http:
        for method, path in sorted(routes - PUBLIC.keys()):
            for who, headers in strangers.items():
                response = http.request(
                    method, concrete(path), headers=headers, json={}, params={"token": TOKEN}
                )
                where = (method, path, who, response.status_code)
                assert TOKEN not in response.text, where
                if (method, path) in DASHBOARD_PAGES:
                    assert response.status_code == 303, where
                    assert response.headers["location"] == "/ui/login", where
                elif path.startswith("/api/"):
                    assert response.status_code == 401, where
                    assert response.headers["www-authenticate"] == "Bearer", where
                    assert response.json()["detail"], where
                else:  # dashboard fragment and actions
                    assert response.status_code in (401, 403), where
                checked += 1
    assert checked >= 5 * 14


def test_public_routes_show_no_job_data(secured: LiveServer, tmp_path: Path) -> None:
    marker = f"secret-payload-{secrets.token_hex(8)}"
    with secured.client() as http:
        created = http.post(
            "/api/jobs",
            json={
                "type": "workspace_init",
                "payload": {"workspaceId": marker},
                "run_at": "2075-01-01T00:00:00Z",
            },
        )
        assert created.status_code == 202, created.text
    with httpx.Client(base_url=secured.url, timeout=10) as anonymous:
        for method, path in PUBLIC:
            response = anonymous.request(method, concrete(path))
            assert marker not in response.text, (method, path)
            assert TOKEN not in response.text, (method, path)
        health = anonymous.get("/healthz").json()
        assert set(health) == {"status", "node"}


def test_the_cookie_is_for_the_dashboard_only(secured: LiveServer) -> None:
    """The login cookie opens the dashboard but not the API: a cookie-authenticated API would
    let any page the operator visits post jobs with the operator's browser."""
    session = signed_in_cookie(secured)
    cookie = {"Cookie": f"{COOKIE}={session}"}
    with httpx.Client(base_url=secured.url, timeout=10) as http:
        assert http.get("/ui/live", headers=cookie).status_code == 200
        assert http.get("/api/status", headers=cookie).status_code == 401
        # The cookie holds a random session id: not the token, nothing derived from it.
        raw = {"Cookie": f"{COOKIE}={TOKEN}"}
        assert http.get("/ui/live", headers=raw).status_code == 401
        login = http.post("/ui/login", data={"token": TOKEN})
        assert TOKEN not in login.headers.get("set-cookie", "")
        assert login.cookies.get(COOKIE) not in (None, session)  # every sign-in its own id
        bearer = {"Authorization": f"bearer  {TOKEN}"}  # scheme case and spaces do not matter
        assert http.get("/api/status", headers=bearer).status_code == 200
        for near in (TOKEN[:-1], TOKEN + "x", TOKEN.upper(), f"{TOKEN}\t{TOKEN}"):
            response = http.get("/api/status", headers={"Authorization": f"Bearer {near}"})
            assert response.status_code == 401, near


def test_every_token_check_goes_through_hmac_compare_digest(
    secured: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    # token_matches looks compare_digest up on the hmac module at each call: the spy sees it.
    assert "hmac.compare_digest(" in inspect.getsource(jobyard.api.security.token_matches)
    monkeypatch.setattr(hmac, "compare_digest", spy)

    def checked(presented: str, request: Any, expected: str = TOKEN) -> None:
        calls.clear()
        request()
        assert (presented.encode(), expected.encode()) in calls, calls

    with httpx.Client(base_url=secured.url, timeout=10) as http:
        checked(
            TOKEN, lambda: http.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        )
        checked(
            WRONG, lambda: http.get("/api/status", headers={"Authorization": f"Bearer {WRONG}"})
        )
        checked(WRONG, lambda: http.post("/ui/login", data={"token": WRONG}))
        checked(TOKEN, lambda: http.post("/ui/login", data={"token": TOKEN}))
        http.cookies.clear()  # signed in now: without this, the session would let it in
        checked(
            WRONG,
            lambda: http.post("/ui/jobs/1/cancel", headers={"Authorization": f"Bearer {WRONG}"}),
        )


TOKEN_NAMES: Final = {"token", "expected", "presented", "api_token"}


def _mentions_token(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in TOKEN_NAMES:
            return True
        if isinstance(sub, ast.Attribute) and sub.attr in TOKEN_NAMES:
            return True
    return False


def test_no_operator_comparison_touches_the_token() -> None:
    """`==`, `!=`, `in` on the token would leak its length and prefix through timing; only
    `is None` checks (which say nothing about the value) and compare_digest are allowed."""
    offenders = []
    modules = (
        jobyard.api.security,
        jobyard.api.dashboard,
        jobyard.api.pages,
        jobyard.api.app,
        jobyard.api.routes,
        jobyard.api.sessions,
        jobyard.api.throttle,
    )
    for module in modules:
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            leaky = [op for op in node.ops if not isinstance(op, ast.Is | ast.IsNot)]
            if leaky and _mentions_token(node):
                offenders.append(f"{module.__name__}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders
    # The check can see one: the same walk flags a comparison written the leaky way.
    sample = ast.parse("ok = presented == expected").body[0]
    assert isinstance(sample, ast.Assign)
    assert _mentions_token(sample.value)


def test_the_token_never_appears_in_logs(
    secured: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    names = ("", "jobyard", "uvicorn", "uvicorn.error", "uvicorn.access", "fastapi")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg, lg.level, lg.handlers[:]) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        if caplog.handler not in lg.handlers:
            lg.addHandler(caplog.handler)  # uvicorn's loggers do not propagate to the root
    try:
        with httpx.Client(base_url=secured.url, timeout=10) as http:
            good = {"Authorization": f"Bearer {TOKEN}"}
            http.get("/api/status", headers=good)
            http.get("/api/status", headers={"Authorization": f"Bearer {WRONG}"})
            http.post("/ui/login", data={"token": TOKEN})
            http.post("/ui/login", data={"token": WRONG})
            http.get("/", headers={"Cookie": f"{COOKIE}={TOKEN}"})
            # A request that fails inside the app (a known 500): its traceback is logged too.
            send(
                secured,
                "POST",
                "/api/jobs",
                headers={**good, "content-type": "application/json"},
                content=b'{"type":"workspace_init","priority":NaN}',
            )
    finally:
        for lg, level, handlers in saved:
            lg.setLevel(level)
            lg.handlers[:] = handlers
    # The test's own HTTP client logs what it receives (the login's Set-Cookie carries the
    # token by design); only what the server side logged counts.
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(caplog.handler.format(r) + repr(r.args) for r in server_side)
    assert "/api/status" in text  # the capture works: uvicorn's access log is in it
    assert TOKEN not in text


def test_the_token_never_appears_in_metrics_schema_or_errors(secured: LiveServer) -> None:
    good = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=secured.url, timeout=10) as http:
        answers = [
            http.get("/metrics", headers=good),
            http.get("/openapi.json", headers=good),
            http.get("/docs", headers=good),
            http.get("/healthz", headers=good),
            http.get("/api/status", headers=good),
            http.get("/api/jobs/999999", headers=good),
            http.post("/api/jobs", headers=good, json={"type": "nope"}),
            http.post("/api/workspaces", headers=good, json={"name": "../x"}),
            http.get("/api/status", headers={"Authorization": f"Bearer {WRONG}"}),
            http.post("/ui/login", data={"token": WRONG}),
            http.post("/ui/login", content=b"{}", headers={"content-type": "application/json"}),
            http.get("/ui/static/missing.js"),
            http.get("/nowhere"),
        ]
    for response in answers:
        assert TOKEN not in response.text, response.request.url
        assert TOKEN not in str(response.headers), response.request.url
        assert WRONG not in response.text, response.request.url  # guesses are not echoed
    assert answers[0].status_code == 200
    assert "jobyard_jobs" in answers[0].text
    for settings_repr in (repr(ServerSettings(api_token=TOKEN)), repr(secured.config)):
        assert TOKEN not in settings_repr


# -- sessions, redirects and the token itself ------------------------------------------------
def test_signing_out_ends_the_session_so_a_copied_cookie_is_refused(secured: LiveServer) -> None:
    session = signed_in_cookie(secured)
    copied = {"Cookie": f"{COOKIE}={session}"}
    with httpx.Client(base_url=secured.url, timeout=10) as http:
        assert http.get("/ui/live", headers=copied).status_code == 200
        other = signed_in_cookie(secured)
        out = http.post("/ui/logout", headers=copied)
        assert out.status_code == 303
        assert out.headers["location"] == "/ui/login"
        # Replayed after sign-out, the cookie opens nothing.
        assert http.get("/ui/live", headers=copied).status_code == 401
        page = http.get("/", headers=copied)
        assert (page.status_code, page.headers["location"]) == (303, "/ui/login")
        refused = http.post("/ui/workspaces", headers=copied, data={"name": "after-logout"})
        assert refused.status_code == 401
        # Only that session ended: another sign-in still works.
        assert http.get("/ui/live", headers={"Cookie": f"{COOKIE}={other}"}).status_code == 200


def test_a_sign_in_ends_after_its_lifetime() -> None:
    now = [0.0]
    sign_ins = SignIns(lifetime=100.0, clock=lambda: now[0])
    session = sign_ins.start()
    assert sign_ins.valid(session)
    now[0] = 99.0
    assert sign_ins.valid(session)
    now[0] = 100.0
    assert not sign_ins.valid(session)
    assert len(sign_ins) == 0  # forgotten, not just refused
    assert not sign_ins.valid("")
    assert not sign_ins.valid(None)


def test_sign_ins_are_capped_and_the_oldest_ends_first() -> None:
    sign_ins = SignIns(max_sessions=2)
    first, second, third = sign_ins.start(), sign_ins.start(), sign_ins.start()
    assert len({first, second, third}) == 3
    assert [sign_ins.valid(s) for s in (first, second, third)] == [False, True, True]


@pytest.mark.parametrize(
    ("path", "location"),
    [("/api/status/", "/api/status"), ("/api/jobs/?limit=1", "/api/jobs?limit=1")],
)
def test_trailing_slash_redirects_name_no_host(
    secured: LiveServer, path: str, location: str
) -> None:
    """With a token, any Host is served; a redirect built from it would point elsewhere."""
    with httpx.Client(base_url=secured.url, timeout=10) as http:
        for host in ("attacker.example", "attacker.example:8000", secured.url[7:]):
            response = http.get(path, headers={"Host": host})
            assert response.status_code == 307, host
            assert response.headers["location"] == location, host


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (" abcdefghijklmnop ", "must not start or end with spaces"),
        ("abcdefghijklmnop\n", "must not start or end with spaces"),
        ("\tabcdefghijklmnop", "must not start or end with spaces"),
        ("abcdefgh\x1bijklmnop", "only printable ASCII"),
        ("abcdefghijklmnopé", "only printable ASCII"),
        ("short", "at least 16 characters"),
    ],
    ids=["padded", "trailing-newline", "leading-tab", "escape", "non-ascii", "short"],
)
def test_a_token_no_header_could_carry_is_refused_at_start_up(token: str, why: str) -> None:
    """Accepted, such a token would refuse every client: HTTP strips the spaces around a
    header value, and a header carries only ASCII. (`jobyard serve` reading it from
    JOBYARD_API_TOKEN is in tests/test_cli.py.)"""
    with pytest.raises(ConfigError) as refused:
        ServerSettings.load(api_token=token)
    message = str(refused.value)
    assert message.startswith("invalid server settings: JOBYARD_API_TOKEN: "), message
    assert why in message
    assert token.strip() not in message


def test_a_token_with_spaces_inside_works_as_a_bearer_token(tmp_path: Path) -> None:
    phrase = "correct horse battery staple"
    assert ServerSettings(api_token=phrase).api_token is not None  # type: ignore[arg-type]
    with (
        live_server(f"sqlite:///{tmp_path / 'j.db'}", tmp_path / "data", token=phrase) as live,
        httpx.Client(base_url=live.url, timeout=10) as http,
    ):
        ok = http.get("/api/status", headers={"Authorization": f"Bearer {phrase}"})
        assert ok.status_code == 200
