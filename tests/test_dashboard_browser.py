"""The dashboard in a real headless Chromium, against a real server in another process.

This is the proof that the page is live: a workspace created behind the browser's back shows up
and turns `ready` while the page stays loaded (a marker set on `window` survives, so there was
no reload). It also signs in through the login form, so the HttpOnly cookie is what the page's
refresh script rides on, and it checks the page's own script runs under its strict CSP.

Chromium is the system one (never a Playwright download). Without it the test skips, except in
CI (CI=true), where it must run.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = os.environ.get("JOBYARD_TEST_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
TOKEN = "browser-test-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000

if not Path(CHROMIUM).exists() and not IN_CI:
    pytest.skip(
        f"no Chromium at {CHROMIUM} (install it, or set JOBYARD_TEST_CHROMIUM); "
        "this test is required only when CI=true",
        allow_module_level=True,
    )

from playwright.sync_api import ConsoleMessage, Page, Response, expect, sync_playwright  # noqa: E402

# The server, as `jobyard serve` runs it: uvicorn, the API, the dashboard and a worker node.
# The token comes from JOBYARD_API_TOKEN, so it never appears on a command line.
SERVER = textwrap.dedent(
    """
    import sys
    from jobyard import Config
    from jobyard.api.server import serve
    from jobyard.api.settings import ServerSettings

    database_url, data_dir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = Config(
        database_url=database_url,
        data_dir=data_dir,
        job_poll_interval=0.1,
        heartbeat_interval=0.2,
        leader_lease_duration=1.0,
        shutdown_grace_period=2.0,
    )
    serve(config, ServerSettings(host="127.0.0.1", port=port))
    """
)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(sqlite_url: str, tmp_path: Path, token: str | None) -> Iterator[Server]:
    """A real server on a free loopback port, stopped with SIGTERM as a supervisor would."""
    script = tmp_path / "serve.py"
    script.write_text(SERVER)
    log = tmp_path / "server.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "JOBYARD_API_TOKEN"}
    if token is not None:
        env["JOBYARD_API_TOKEN"] = token
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(script), sqlite_url, str(tmp_path / "data"), str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    running = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_healthy(running)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"server ignored SIGTERM:\n{running.output()}")
    # uvicorn re-raises the signal once it has shut down cleanly, so -SIGTERM is a clean exit.
    assert process.returncode in (0, -signal.SIGTERM), running.output()
    assert "Application shutdown complete" in running.output()


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[Server]:
    """The server with an API token: the dashboard asks to sign in."""
    with running_server(sqlite_url, tmp_path, TOKEN) as running:
        yield running


def wait_healthy(server: Server, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"server exited {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"server not healthy after {within}s:\n{server.output()}")
        time.sleep(0.05)


@pytest.fixture
def page(server: Server) -> Iterator[Page]:
    """A fresh headless Chromium page that insists, at the end, on no script errors, no CSP
    violations and no failed subresource (script, stylesheet, fragment fetch). Pages that answer
    401 or 422 on purpose (a wrong token, a refused form) are documents, and allowed."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            opened = context.new_page()
            problems: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                # The browser also logs every 4xx document; those are checked below instead.
                if message.type == "error" and not message.text.startswith("Failed to load"):
                    problems.append(message.text)

            def on_response(response: Response) -> None:
                if response.status >= 400 and response.request.resource_type != "document":
                    problems.append(f"{response.status} {response.url}")

            opened.on("console", on_console)
            opened.on("pageerror", lambda exc: problems.append(str(exc)))
            opened.on("response", on_response)
            opened.set_default_timeout(WAIT_MS)
            yield opened
            assert problems == [], f"browser problems: {problems}"
        finally:
            browser.close()


def api(server: Server, method: str, path: str, json: Any = None) -> httpx.Response:
    """Call the JSON API as a script would, with the bearer token."""
    response = httpx.request(method, server.url + path, headers=BEARER, json=json, timeout=10)
    assert response.is_success, response.text
    return response


def test_dashboard_is_live_in_a_real_browser(server: Server, page: Page, tmp_path: Path) -> None:
    # Signing in: the dashboard wants the token, and the login form turns it into a cookie.
    page.goto(server.url + "/")
    expect(page).to_have_url(server.url + "/ui/login")
    page.fill("input[name=token]", "wrong-token-wrong-token")
    page.click("button[type=submit]")
    expect(page.locator(".form-error")).to_contain_text("wrong")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.url + "/")
    expect(page.locator("#cluster")).to_be_visible()
    # The script's first refresh replaces the no-script notice.
    expect(page.locator("#live-state")).to_contain_text("updated")

    # A workspace created behind the page's back appears and becomes ready, with no reload.
    page.evaluate("window.jobyardNotReloaded = true")
    created = api(server, "POST", "/api/workspaces", json={"name": "from-api"}).json()
    status = page.locator('#workspaces tr[data-name="from-api"] .status')
    expect(status).to_have_text("ready", timeout=WAIT_MS)
    assert page.evaluate("window.jobyardNotReloaded === true"), "the page was reloaded"
    expect(page.locator(f'#workspaces tr[data-id="{created["workspace"]["id"]}"]')).to_be_visible()
    expect(page.locator("#leader code")).not_to_be_empty()
    expect(
        page.locator('#types tr[data-type="workspace_init"] td[data-state="completed"]')
    ).to_have_text("1")

    # A job enqueued for later appears live; its Cancel button (inside a swapped fragment)
    # still posts, and the redirect lands back on the dashboard showing it cancelled.
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job = api(
        server,
        "POST",
        "/api/jobs",
        json={"type": "workspace_init", "payload": {"workspaceId": "ws_later"}, "run_at": later},
    ).json()
    row = page.locator(f'#jobs tr[data-job="{job["id"]}"]')
    expect(row.locator(".status")).to_have_text("pending")
    assert page.evaluate("window.jobyardNotReloaded === true"), "the page was reloaded"
    row.get_by_role("button", name="Cancel").click()
    expect(page).to_have_url(server.url + "/")
    expect(page.locator(f'#jobs tr[data-job="{job["id"]}"] .status')).to_have_text("cancelled")
    assert api(server, "GET", f"/api/jobs/{job['id']}").json()["status"] == "cancelled"

    # The create form: a bad name is refused with the reason; a good one is built.
    form = page.locator("#new-workspace")
    form.locator("input[name=name]").fill("../escape")
    form.get_by_role("button", name="Create").click()
    expect(page.locator(".form-error")).to_contain_text("not a safe directory name")
    form.locator("input[name=name]").fill("from-form")
    form.get_by_role("button", name="Create").click()
    expect(page).to_have_url(server.url + "/")
    expect(page.locator('#workspaces tr[data-name="from-form"] .status')).to_have_text("ready")
    names = {w["name"] for w in api(server, "GET", "/api/workspaces").json()}
    assert names == {"from-api", "from-form"}

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


# A page on another site: `localhost` is a different site from `127.0.0.1` to the browser. It
# tries both ways a page can post without asking first: a no-cors fetch and a form submission.
EVIL_PAGE = """<!doctype html>
<html><body>
<form id="form" method="post" action="{target}/api/jobs/{form_job}/cancel"></form>
<script>
  fetch("{target}/api/jobs/{fetch_job}/cancel", {{method: "POST", mode: "no-cors"}})
    .finally(() => document.getElementById("form").submit());
</script>
</body></html>
"""


@contextmanager
def evil_site(html_text: str) -> Iterator[str]:
    """Serve `html_text` at http://localhost:<port>/ from a thread."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html_text.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_page_on_another_site_cannot_cancel_jobs_in_a_real_browser(
    sqlite_url: str, tmp_path: Path
) -> None:
    """No token (the server is on loopback only), yet a page from another site, open in the
    operator's browser, must not be able to change anything."""
    with running_server(sqlite_url, tmp_path, None) as target:
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        body = {"type": "workspace_init", "payload": {"workspaceId": "ws_x"}, "run_at": later}
        ids = [
            httpx.post(f"{target.url}/api/jobs", json=body, timeout=10).json()["id"]
            for _ in range(2)
        ]
        page_html = EVIL_PAGE.format(target=target.url, form_job=ids[0], fetch_job=ids[1])
        with evil_site(page_html) as evil_url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                answers: dict[str, int] = {}
                page.on(
                    "response",
                    lambda r: (
                        answers.__setitem__(r.url, r.status)
                        if r.url.startswith(target.url)
                        else None
                    ),
                )
                with page.expect_navigation(url=f"{target.url}/api/jobs/{ids[0]}/cancel"):
                    page.goto(evil_url)
                page.wait_for_load_state()
            finally:
                browser.close()
        # Both attempts reached the server, and both were refused.
        assert answers == {
            f"{target.url}/api/jobs/{ids[0]}/cancel": 403,
            f"{target.url}/api/jobs/{ids[1]}/cancel": 403,
        }
        for job_id in ids:
            job = httpx.get(f"{target.url}/api/jobs/{job_id}", timeout=10).json()
            assert job["status"] == "pending"
