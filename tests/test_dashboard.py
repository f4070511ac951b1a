"""The dashboard over HTTP (in process, through httpx's ASGI transport), on both stores.

The dispatcher really runs: jobs fail for real, workspaces are really built, and the page is
checked for what an operator must see and for what an attacker must not be able to inject.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from markupsafe import escape

from jobyard import Config, JobStatus
from jobyard.api import ServerSettings, create_app
from jobyard.api.dashboard import COOKIE
from jobyard.api.pages import sparkline
from jobyard.model import Job
from jobyard.workspaces import WorkspaceRuntime as Runtime
from jobyard.workspaces import build_workspace_runtime as build_runtime
from jobyard.workspaces.entities import EntityStatus
from jobyard.workspaces.web import workspace_extension

TOKEN = "dashboard-test-token-0123456789"
XSS = "<script>alert(1)</script>"
BASE = "http://127.0.0.1"


@dataclass
class Harness:
    """A running node, the app on it, and every call the failing executor received."""

    rt: Runtime
    client: httpx.AsyncClient
    boom_calls: list[int] = field(default_factory=list)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 10.0) -> None:
    """Poll `check` until it holds; the dispatcher works in another task, on its own clock."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def job_in(rt: Runtime, job_id: int, *states: JobStatus) -> Job:
    found: list[Job] = []

    async def check() -> bool:
        job = await rt.store.get_job(job_id)
        found[:] = [job] if job is not None else []
        return job is not None and job.status in states

    await eventually(check, f"job {job_id} to be {[s.value for s in states]}")
    return found[0]


@pytest.fixture
def token() -> str | None:
    """The API token the app is built with; tests about signing in override it."""
    return None


@pytest.fixture
def overrides() -> dict[str, object]:
    """Config settings a test changes; tests about wake-ups override it."""
    return {}


@pytest.fixture
async def h(
    store_url: str, tmp_path: Path, token: str | None, overrides: dict[str, object]
) -> AsyncIterator[Harness]:
    settings: dict[str, object] = {
        "job_poll_interval": 0.05,
        "heartbeat_interval": 0.2,
        "leader_lease_duration": 1.0,
        **overrides,
    }
    config = Config(database_url=store_url, data_dir=tmp_path / "data", **settings)
    rt = build_runtime(config)
    await rt.store.migrate()
    calls: list[int] = []

    def boom(job: Job) -> None:
        calls.append(job.id)
        raise ValueError(XSS)

    # Registered before start: the dispatcher refuses new types once running.
    rt.dispatcher.register_executor("boom", boom)
    # ASGITransport runs no lifespan, so the node is started and stopped here instead.
    settings = ServerSettings(api_token=token)
    app = create_app(rt, settings, run_worker=False, extensions=[workspace_extension(rt)])
    node = asyncio.create_task(rt.dispatcher.start())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield Harness(rt, client, calls)
    await rt.dispatcher.stop()
    await node
    await rt.close()


# For tests of the HTTP layer alone, where the second store adds time and nothing else.
sqlite_only = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


async def failed_boom(h: Harness) -> Job:
    job = await h.rt.queue.enqueue("boom", {"irrelevant": True}, max_attempts=1)
    return await job_in(h.rt, job.id, JobStatus.FAILED)


# -- what the page shows ------------------------------------------------------------------------
async def test_page_shows_every_section_with_the_cluster_in_it(h: Harness) -> None:
    rt = h.rt
    await eventually(lambda: _has_leader(rt), "a leader")
    await rt.workspaces.create("shown-ws")
    failed = await failed_boom(h)

    response = await h.client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    for section in (
        'id="cluster"',
        'id="nodes"',
        'id="types"',
        'id="throughput"',
        'id="failures"',
        'id="jobs"',
        'id="workspaces"',
        'id="sessions"',
        'id="new-workspace"',
        'data-live="/ui/live"',
        'src="/ui/static/live.js"',
    ):
        assert section in page, section
    node = rt.dispatcher.node_id
    assert f"<code>{node}</code> (this node)" in page
    assert f'data-node="{node}"' in page
    # Per type: counts by state and running against the cluster-wide limit.
    assert 'data-type="workspace_init"' in page
    assert "/ 5" in page  # workspace_init's seed limit
    assert 'data-type="boom"' in page
    assert f'data-job="{failed.id}"' in page
    assert 'data-name="shown-ws"' in page
    assert "<polyline" in page


async def test_live_fragment_is_the_live_part_alone(h: Harness) -> None:
    await h.rt.workspaces.create("frag-ws")
    response = await h.client.get("/ui/live")
    assert response.status_code == 200
    assert 'id="workspaces"' in response.text
    assert 'data-name="frag-ws"' in response.text
    assert "<html" not in response.text
    assert 'id="new-workspace"' not in response.text  # the form is never swapped out


async def test_job_error_with_markup_renders_as_text(h: Harness) -> None:
    job = await failed_boom(h)
    assert job.error is not None
    assert XSS in job.error

    for path in ("/", "/ui/live"):
        page = (await h.client.get(path)).text
        assert html.escape(XSS, quote=False) in page, path  # &lt;script&gt;alert(1)&lt;/script&gt;
        assert "<script>alert" not in page, path
        assert "alert(1)</script>" not in page, path


async def test_template_with_markup_renders_as_text(h: Harness) -> None:
    """Templates are user input too, and their failure message quotes them."""
    h.rt.workspaces.templates_dir.mkdir(parents=True)
    markup = '"><img src=x onerror=alert(2)>'
    workspace, _ = await h.rt.workspaces.create("markup", markup)
    await eventually(
        lambda: _workspace_in(h.rt, workspace.id, EntityStatus.FAILED), "the workspace to fail"
    )
    page = (await h.client.get("/")).text
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page


async def test_throughput_counts_finished_jobs(h: Harness) -> None:
    for _ in range(3):
        await failed_boom(h)
    page = (await h.client.get("/ui/live")).text
    assert '<span id="throughput-total">3</span>' in page


def test_sparkline_fills_empty_minutes_and_scales_to_the_peak() -> None:
    now = datetime(2024, 5, 1, 12, 30, 40, tzinfo=UTC)
    this_minute = now.replace(second=0)
    rows = [
        (this_minute - timedelta(minutes=29), 2),  # the first minute of the window
        (this_minute - timedelta(minutes=30), 99),  # just outside it
        (this_minute, 4),
    ]
    line = sparkline(rows, now)
    assert len(line.counts) == 30
    assert line.counts[0] == 2
    assert line.counts[-1] == 4
    assert line.total == 6
    assert line.peak == 4
    points = [tuple(map(float, p.split(","))) for p in line.points.split()]
    assert points[0] == (0.0, 24.0)  # half the peak, half way up the 42-pixel span
    assert points[-1] == (300.0, 3.0)  # the peak touches the top padding
    assert all(y == 45.0 for _, y in points[1:-1])
    assert sparkline([], now).points.split()[0] == "0,45"  # nothing finished: a flat line


# -- actions ------------------------------------------------------------------------------------
async def test_retry_button_runs_a_failed_job_again(h: Harness) -> None:
    job = await failed_boom(h)
    assert h.boom_calls == [job.id]
    page = (await h.client.get("/")).text
    assert f'action="/ui/jobs/{job.id}/retry"' in page

    response = await h.client.post(f"/ui/jobs/{job.id}/retry")

    assert response.status_code == 303
    assert response.headers["location"] == "/"

    async def ran_again() -> bool:
        return h.boom_calls == [job.id, job.id]

    await eventually(ran_again, "the retried job to run again")
    again = await job_in(h.rt, job.id, JobStatus.FAILED)
    assert again.attempt == 1  # a fresh set of attempts, used up once more


# Poll-only and rarely: only the dashboard's wake-up can make the retried job run in time.
@pytest.mark.parametrize("overrides", [{"job_poll_interval": 60.0, "listen": False}])
@sqlite_only
async def test_retry_button_wakes_the_dispatcher(h: Harness) -> None:
    job = await failed_boom(h)  # enqueueing wakes it too, so the first run is prompt

    assert (await h.client.post(f"/ui/jobs/{job.id}/retry")).status_code == 303

    async def ran_again() -> bool:
        return len(h.boom_calls) == 2

    await eventually(ran_again, "the retried job to run before the next poll", within=5.0)


async def test_cancel_button_cancels_a_pending_job_and_retry_brings_it_back(h: Harness) -> None:
    later = await h.rt.queue.enqueue("boom", None, run_at=timedelta(hours=1))
    page = (await h.client.get("/")).text
    assert f'action="/ui/jobs/{later.id}/cancel"' in page

    response = await h.client.post(f"/ui/jobs/{later.id}/cancel")

    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cancelled = await h.rt.store.get_job(later.id)
    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    assert f'action="/ui/jobs/{later.id}/retry"' in (await h.client.get("/")).text

    assert (await h.client.post(f"/ui/jobs/{later.id}/retry")).status_code == 303
    retried = await h.rt.store.get_job(later.id)
    assert retried is not None
    # Due at once now, so the node may already have run (and failed) it again.
    assert retried.status in (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.FAILED)


@sqlite_only
async def test_actions_on_jobs_in_the_wrong_state_or_missing_say_so(h: Harness) -> None:
    failed = await failed_boom(h)
    refused = await h.client.post(f"/ui/jobs/{failed.id}/cancel")
    assert refused.status_code == 409
    assert "only pending jobs can be cancelled" in refused.text
    still = await h.rt.store.get_job(failed.id)
    assert still is not None
    assert still.status is JobStatus.FAILED

    for action in ("retry", "cancel"):
        for job_id in (999_999, 0, 2**63):
            missing = await h.client.post(f"/ui/jobs/{job_id}/{action}")
            assert missing.status_code == 404, (action, job_id)


async def test_of_concurrent_retry_clicks_one_requeues_and_the_rest_say_already_pending(
    h: Harness,
) -> None:
    h.rt.queue.declare("unserved")
    job = await h.rt.queue.enqueue("unserved", None)
    assert await h.rt.admin.cancel(job.id)
    responses = await asyncio.gather(
        *(h.client.post(f"/ui/jobs/{job.id}/retry") for _ in range(50))
    )
    codes = [r.status_code for r in responses]
    assert codes.count(303) == 1
    assert codes.count(409) == 49
    refused = next(r for r in responses if r.status_code == 409)
    assert f"job {job.id} is already pending" in refused.text
    assert 'id="notice"' in refused.text


@sqlite_only
async def test_forms_posted_from_another_site_are_refused(h: Harness) -> None:
    later = await h.rt.queue.enqueue("boom", None, run_at=timedelta(hours=1))
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://other.dashboard.test"},
    ):
        response = await h.client.post(f"/ui/jobs/{later.id}/cancel", headers=headers)
        assert response.status_code == 403, headers
        created = await h.client.post("/ui/workspaces", data={"name": "csrf"}, headers=headers)
        assert created.status_code == 403, headers
    job = await h.rt.store.get_job(later.id)
    assert job is not None
    assert job.status is JobStatus.PENDING
    assert await h.rt.workspace_store.list_workspaces() == []

    same = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
    assert (await h.client.post(f"/ui/jobs/{later.id}/cancel", headers=same)).status_code == 303


# -- the create-workspace form ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "template", "expected"),
    [
        ("../etc", "", "is not a safe directory name"),
        ("<script>alert(1)</script>", "", "is not a safe directory name"),
        ("", "", "is not a safe directory name"),
        ("fine", "../outside", "must not contain '..'"),
        ("fine", "/etc", "must be a path inside the templates folder"),
    ],
)
async def test_create_workspace_form_shows_the_error_and_stores_nothing(
    h: Harness, name: str, template: str, expected: str
) -> None:
    response = await h.client.post("/ui/workspaces", data={"name": name, "template": template})

    assert response.status_code == 422
    page = response.text
    assert 'class="form-error"' in page
    assert escape(expected) in page
    assert "<script>alert" not in page
    assert await h.rt.workspace_store.list_workspaces() == []
    assert await h.rt.store.list_jobs() == []
    # The form keeps what was typed, escaped, so it can be corrected.
    assert f'value="{escape(name)}"' in page


async def test_create_workspace_form_creates_one_that_becomes_ready(h: Harness) -> None:
    response = await h.client.post("/ui/workspaces", data={"name": " from-form ", "template": ""})

    assert response.status_code == 303
    assert response.headers["location"] == "/"
    (workspace,) = await h.rt.workspace_store.list_workspaces()
    assert workspace.name == "from-form"
    assert workspace.template is None
    await eventually(
        lambda: _workspace_in(h.rt, workspace.id, EntityStatus.READY), "the workspace to be ready"
    )
    page = (await h.client.get("/ui/live")).text
    assert f'data-id="{workspace.id}" data-name="from-form"' in page
    assert "status-ready" in page


@sqlite_only
async def test_forms_must_be_urlencoded(h: Harness) -> None:
    response = await h.client.post("/ui/workspaces", json={"name": "json-ws"})
    assert response.status_code == 415
    assert await h.rt.workspace_store.list_workspaces() == []


# -- signing in ---------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [TOKEN])
@sqlite_only
async def test_token_is_required_when_configured(h: Harness, token: str) -> None:
    later = await h.rt.queue.enqueue("boom", None, run_at=timedelta(hours=1))
    client = h.client

    # Nothing presented: pages send the browser to sign in, the rest answers 401.
    page = await client.get("/")
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login"
    assert (await client.get("/ui/live")).status_code == 401
    assert (await client.post(f"/ui/jobs/{later.id}/cancel")).status_code == 401
    assert (await client.post(f"/ui/jobs/{later.id}/retry")).status_code == 401
    assert (await client.post("/ui/workspaces", data={"name": "nope"})).status_code == 401
    # A wrong token is no better, from either place.
    wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
    assert (await client.get("/ui/live", headers=wrong)).status_code == 401
    assert (await client.post(f"/ui/jobs/{later.id}/cancel", headers=wrong)).status_code == 401
    assert (await client.get("/", headers=wrong)).status_code == 303
    wrong_cookie = {"Cookie": f"{COOKIE}={'y' * len(TOKEN)}"}
    assert (await client.get("/ui/live", headers=wrong_cookie)).status_code == 401
    job = await h.rt.store.get_job(later.id)
    assert job is not None
    assert job.status is JobStatus.PENDING
    assert await h.rt.workspace_store.list_workspaces() == []

    # The login page is open; a wrong token there sets nothing.
    assert (await client.get("/ui/login")).status_code == 200
    refused = await client.post("/ui/login", data={"token": "not-the-token"})
    assert refused.status_code == 401
    assert "set-cookie" not in refused.headers
    assert COOKIE not in client.cookies

    # The bearer header works as it does for /api.
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.get("/", headers=bearer)).status_code == 200
    assert (await client.get("/ui/live", headers=bearer)).status_code == 200

    # The login form sets an HttpOnly, SameSite=Strict cookie that then lets everything in.
    signed_in = await client.post("/ui/login", data={"token": TOKEN})
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/"
    cookie = signed_in.headers["set-cookie"].lower()
    assert cookie.startswith(f"{COOKIE}=")
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/" in cookie
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/ui/live")).status_code == 200
    assert (await client.post(f"/ui/jobs/{later.id}/cancel")).status_code == 303

    # Signing out forgets it.
    assert (await client.post("/ui/logout")).status_code == 303
    assert (await client.get("/ui/live")).status_code == 401


@sqlite_only
async def test_without_a_token_everything_is_open(h: Harness) -> None:
    assert (await h.client.get("/")).status_code == 200
    login = await h.client.get("/ui/login")
    assert login.status_code == 303
    assert login.headers["location"] == "/"


@sqlite_only
async def test_dashboard_routes_stay_out_of_the_openapi_schema(h: Harness) -> None:
    paths = (await h.client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]


@sqlite_only
async def test_static_files_are_served_and_nothing_else(h: Harness) -> None:
    script = await h.client.get("/ui/static/live.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "data-live" in script.text
    assert (await h.client.get("/ui/static/dashboard.css")).status_code == 200
    for name in ("missing.js", "..%2Fdashboard.py", "%2E%2E%2F__init__.py"):
        assert (await h.client.get(f"/ui/static/{name}")).status_code == 404, name


# -- helpers ------------------------------------------------------------------------------------
async def _has_leader(rt: Runtime) -> bool:
    return await rt.store.get_leader() is not None


async def _workspace_in(rt: Runtime, workspace_id: str, state: EntityStatus) -> bool:
    workspace = await rt.workspace_store.get_workspace(workspace_id)
    return workspace is not None and workspace.status is state
