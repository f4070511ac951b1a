"""The live dashboard: one server-rendered page at `/` that an operator can leave open.

The engine's sections (cluster, throughput, jobs by type, failures, recent jobs) are drawn here;
each extension's panel (see `jobyard.api.extensions`) adds a part above the live one and a part
inside it, drawn by the same rules. Everything is rendered by Jinja2 with autoescaping always on,
because nearly every string on the page (job errors, node names, workspace names and templates)
comes from users or from code that quotes user input; nothing here is ever marked safe. The page
stays current without a reload: a small same-origin script (`static/live.js`) re-fetches the
`/ui/live` fragment every 2 s and swaps it in. Actions are plain HTML forms that POST and
redirect back (303), so the page works with no script at all, just without the live refresh.

Who may look: when the server has an API token, the dashboard asks for it too, as a bearer header
or by signing in at `/ui/login`, which starts a session of this server process (see
`jobyard.api.sessions`) and keeps its id in the `jobyard_session` cookie; signing out ends it.
Wrong tokens, in the header or the form, are throttled per client (`jobyard.api.throttle`).
Without a token the server only listens on loopback, so the page is open; forms posted from
another site are still refused, as every state-changing request is (`CrossSiteGuard`), because a
web page in the operator's browser can reach loopback.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    PackageLoader,
    PrefixLoader,
    StrictUndefined,
)

from jobyard.admin import JobAction
from jobyard.api.extensions import Extension, FormHandler, FormRefused
from jobyard.api.security import bearer_matches, presented_token_matches, throttled
from jobyard.api.sessions import SignIns
from jobyard.model import Job, JobNotFound, JobStatus
from jobyard.runtime import Runtime
from jobyard.status import ClusterStatus
from jobyard.store.records import JobFilter

__all__ = ["COOKIE", "Pages", "Sparkline", "panel_forms", "router", "sparkline"]

# HTML, not JSON: nothing here belongs in the OpenAPI schema.
router = APIRouter(include_in_schema=False)

COOKIE: Final = "jobyard_session"
LIVE_PATH: Final = "/ui/live"
LOGIN_PATH: Final = "/ui/login"
THROUGHPUT_MINUTES: Final = 30
RECENT_JOBS: Final = 20
RECENT_FAILURES: Final = 10
ERROR_CHARS: Final = 600
# Starlette renamed HTTP_422_UNPROCESSABLE_ENTITY (and warns on the old name); the number works
# on every supported version.
UNPROCESSABLE: Final = 422

# The page loads only its own script and stylesheet, so an injected tag would not run even if
# escaping ever failed; frames and foreign form targets are refused as well.
_SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not "no-referrer": with it, browsers send `Origin: null` on form posts, which
    # the cross-site check must refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


_STATIC_TYPES: Final[Mapping[str, str]] = {
    "live.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _load_static() -> dict[str, bytes]:
    """Read the few static files once: they ship inside the package and never change."""
    folder = resources.files("jobyard.api").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in _STATIC_TYPES}


_STATIC: Final = _load_static()


# -- what the page shows ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sparkline:
    """Jobs finished per minute, oldest first; the last bucket is the current minute.

    The SVG coordinates are computed here, as plain numbers, so the template only places them.
    """

    counts: tuple[int, ...]
    width: int = 300
    height: int = 48
    pad: int = 3

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)

    @property
    def last(self) -> int:
        return self.counts[-1] if self.counts else 0

    def _xy(self) -> list[tuple[float, float]]:
        n = len(self.counts)
        step = self.width / (n - 1) if n > 1 else 0.0
        span = self.height - 2 * self.pad
        peak = self.peak
        bottom = self.height - self.pad
        return [
            (round(i * step, 1), round(bottom - (c / peak if peak else 0.0) * span, 1))
            for i, c in enumerate(self.counts)
        ]

    @property
    def points(self) -> str:
        """The polyline's `points` attribute."""
        return " ".join(f"{x:g},{y:g}" for x, y in self._xy())

    @property
    def area(self) -> str:
        """The polygon under the line, closed along the bottom edge."""
        xy = self._xy()
        if not xy:
            return ""
        bottom = self.height - self.pad
        closed = [*xy, (xy[-1][0], bottom), (xy[0][0], bottom)]
        return " ".join(f"{x:g},{y:g}" for x, y in closed)


def sparkline(
    rows: Sequence[tuple[datetime, int]], now: datetime, minutes: int = THROUGHPUT_MINUTES
) -> Sparkline:
    """Bucket `finished_per_minute` rows into the last `minutes` minutes ending with `now`'s.

    Minutes with nothing finished have no row, so they are filled with zeros here; rows outside
    the window are ignored.
    """
    this_minute = math.floor(now.timestamp() / 60) * 60
    first = this_minute - (minutes - 1) * 60
    by_minute: dict[int, int] = {}
    for minute, count in rows:
        key = math.floor(minute.timestamp() / 60) * 60
        by_minute[key] = by_minute.get(key, 0) + count
    return Sparkline(tuple(by_minute.get(first + i * 60, 0) for i in range(minutes)))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the live part of the page shows, read in one go."""

    now: datetime
    status: ClusterStatus
    this_node: str
    failures: list[Job]
    jobs: list[Job]
    throughput: Sparkline
    states: tuple[JobStatus, ...] = field(default=tuple(JobStatus))


async def snapshot(rt: Runtime) -> Snapshot:
    """Read the cluster, the recent jobs and the throughput, through the admin door.

    The database clock is the reference, so ages and the sparkline agree with `finished_at`
    even when this host's clock drifts.
    """
    admin = rt.admin
    now = await admin.now()
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=THROUGHPUT_MINUTES - 1)
    return Snapshot(
        now=now,
        status=await admin.cluster_status(),
        this_node=rt.dispatcher.node_id,
        failures=await admin.list_jobs(JobFilter(status=JobStatus.FAILED, limit=RECENT_FAILURES)),
        jobs=await admin.list_jobs(JobFilter(limit=RECENT_JOBS)),
        throughput=sparkline(await admin.finished_per_minute(since), now),
    )


def _ago(now: datetime) -> Callable[[datetime | None], str]:
    """A short age ("4s ago", "3m ago") relative to the snapshot's database time."""

    def ago(moment: datetime | None) -> str:
        if moment is None:
            return "—"
        seconds = (now - moment).total_seconds()
        if seconds < 0:
            return f"in {_span(-seconds)}"
        return f"{_span(seconds)} ago"

    return ago


def _span(seconds: float) -> str:
    if seconds < 1:
        return "<1s"
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clip(text: str | None, limit: int = ERROR_CHARS) -> str:
    """Long tracebacks would push everything else off the page; the API has the full text."""
    if text is None:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- how the page is drawn: the engine's templates and the extensions' panels ------------------
@dataclass(frozen=True, slots=True)
class PanelView:
    """One panel's template and what it shows, for one drawing of the page."""

    template: str
    data: Mapping[str, Any]
    form_error: str | None = None
    form_values: Mapping[str, str] = field(default_factory=dict)


# Which panel's form was refused, and why: drawn under that panel's form.
Refusal = tuple[str, FormRefused]


class Pages:
    """The dashboard of one app: its templates and the panels of its extensions.

    One Jinja environment per app, loading the engine's templates by their own names and each
    panel's from its package under the extension's name (`workspaces/live.html`), so a panel
    can neither replace an engine template nor another panel's. autoescape=True (not
    select_autoescape): every template is HTML, so every `{{ }}` is escaped whatever the file is
    called. StrictUndefined turns a typo into an error, not a blank.
    """

    def __init__(self, extensions: Sequence[Extension] = ()) -> None:
        names = [e.name for e in extensions]
        if len(set(names)) != len(names):
            raise ValueError(f"two extensions share a name: {names}")
        self.panels = [(e.name, e.panel) for e in extensions if e.panel is not None]
        paths = [path for _, panel in self.panels for path in panel.forms]
        if len(set(paths)) != len(paths):
            raise ValueError(f"two panels post forms to the same path: {sorted(paths)}")
        own: dict[str, BaseLoader] = {
            name: PackageLoader(panel.package, "templates") for name, panel in self.panels
        }
        self.env = Environment(
            loader=ChoiceLoader([PackageLoader("jobyard.api", "templates"), PrefixLoader(own)]),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["iso"] = _iso
        self.env.filters["clip"] = _clip

    def forms(self) -> list[tuple[str, str, FormHandler]]:
        """(extension name, path, handler) of every panel's form."""
        return [
            (name, p, handle) for name, panel in self.panels for p, handle in panel.forms.items()
        ]

    async def tops(self, refusal: Refusal | None = None) -> list[PanelView]:
        """The panels' parts above the live one, each with its loader's data, and the refused
        form's reason and values under the panel whose form it was."""
        views = []
        for name, panel in self.panels:
            if panel.top is None:
                continue
            refused = refusal[1] if refusal is not None and refusal[0] == name else None
            views.append(
                PanelView(
                    f"{name}/{panel.top}",
                    await panel.load_top(),
                    form_error=refused.message if refused else None,
                    form_values=refused.values if refused else {},
                )
            )
        return views

    async def lives(self) -> list[PanelView]:
        """The panels' parts inside the live one, each with its loader's data."""
        return [
            PanelView(f"{name}/{panel.live}", await panel.load_live())
            for name, panel in self.panels
            if panel.live is not None
        ]

    def render(self, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=code, headers=dict(_SECURITY_HEADERS))


# -- responses ----------------------------------------------------------------------------------
def _runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _pages(request: Request) -> Pages:
    pages: Pages = request.app.state.pages
    return pages


def _token_required(request: Request) -> bool:
    token: str | None = request.app.state.api_token
    return token is not None


def _sign_ins(request: Request) -> SignIns:
    sign_ins: SignIns = request.app.state.sign_ins
    return sign_ins


def _authorized(request: Request) -> bool:
    """A live sign-in session (browsers) or the API token as a bearer header (scripts, compared
    in constant time and throttled: a client out of wrong tokens gets 429). Anyone may look
    when no token is configured."""
    expected: str | None = request.app.state.api_token
    if expected is None:
        return True
    return _sign_ins(request).valid(request.cookies.get(COOKIE)) or bearer_matches(
        request, expected
    )


def _error(request: Request, status_code: int, message: str) -> HTMLResponse:
    return _pages(request).render(
        "error.html",
        status_code,
        message=message,
        status_code=status_code,
        token_required=_token_required(request),
    )


def _see_other(url: str) -> RedirectResponse:
    """303, so the browser follows a POST with a GET and a reload never repeats the action."""
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


def _unauthorized(request: Request) -> HTMLResponse:
    response = _error(request, status.HTTP_401_UNAUTHORIZED, "Sign in with the API token first.")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _form(request: Request) -> dict[str, str] | HTMLResponse:
    """The fields of a urlencoded form (the only kind these pages send), first value of each.

    Parsed by hand because FastAPI's `Form` needs python-multipart, which jobyard does not
    depend on. The body is already capped by the app's BodyLimits.
    """
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return _error(
            request,
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "Send the form as application/x-www-form-urlencoded.",
        )
    try:
        text = (await request.body()).decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        return _error(request, status.HTTP_400_BAD_REQUEST, "The form could not be read.")
    return {name: values[0] for name, values in fields.items() if values}


async def _live_context(request: Request) -> dict[str, Any]:
    """What the live part shows: the engine's snapshot, then each panel's live part. The
    snapshot comes first, so panels' ages are against the same database time."""
    snap = await snapshot(_runtime(request))
    return {
        "snap": snap,
        "lives": await _pages(request).lives(),
        "ago": _ago(snap.now),
        "live_path": LIVE_PATH,
        "token_required": _token_required(request),
    }


async def _index(
    request: Request,
    *,
    status_code: int = 200,
    refusal: Refusal | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    pages = _pages(request)
    context = await _live_context(request)
    return pages.render(
        "index.html", status_code, notice=notice, tops=await pages.tops(refusal), **context
    )


# -- pages --------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> Response:
    """The whole dashboard; browsers without the token are sent to sign in."""
    if not _authorized(request):
        return _see_other(LOGIN_PATH)
    return await _index(request)


@router.get(LIVE_PATH, response_class=HTMLResponse)
async def live(request: Request) -> Response:
    """The live part of the page alone, for the 2 s refresh. 401 rather than a redirect, so
    the script can tell an expired sign-in from a page and send the browser to log in."""
    if not _authorized(request):
        return _unauthorized(request)
    return _pages(request).render("_live.html", **await _live_context(request))


@router.get(LOGIN_PATH, response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    if not _token_required(request):
        return _see_other("/")
    return _pages(request).render("login.html", error=None)


@router.post(LOGIN_PATH, response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the token and start a session whose id goes in a cookie the page's script cannot
    read (HttpOnly) and that other sites' requests do not carry (SameSite=Strict). The cookie
    never holds the token or anything derived from it."""
    expected: str | None = request.app.state.api_token
    if expected is None:
        return _see_other("/")
    fields = await _form(request)
    if isinstance(fields, HTMLResponse):
        return fields
    if (refusal := throttled(request)) is not None:
        page = _pages(request).render(
            "login.html",
            status.HTTP_429_TOO_MANY_REQUESTS,
            error="Too many wrong tokens from your address. Wait a little, then try again.",
        )
        page.headers.update(refusal.headers or {})
        return page
    if not presented_token_matches(request, fields.get("token"), expected):
        return _pages(request).render(
            "login.html", status.HTTP_401_UNAUTHORIZED, error="That token is wrong."
        )
    sign_ins = _sign_ins(request)
    response = _see_other("/")
    response.set_cookie(
        COOKIE,
        sign_ins.start(),
        max_age=int(sign_ins.lifetime),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/ui/logout", response_class=HTMLResponse)
async def logout(request: Request) -> Response:
    """End the session, so its cookie opens nothing even if it was copied, and forget it."""
    _sign_ins(request).end(request.cookies.get(COOKIE))
    response = _see_other(LOGIN_PATH if _token_required(request) else "/")
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/ui/static/{name}")
async def static(name: str) -> Response:
    """The page's own script, stylesheet and icon; a fixed list, so no path reaches the disk."""
    body = _STATIC.get(name)
    if body is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        body,
        media_type=_STATIC_TYPES[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# -- actions ------------------------------------------------------------------------------------
def _refuse_action(request: Request) -> HTMLResponse | None:
    """Cross-site posts never get here (`CrossSiteGuard`); what is left is who may act."""
    if not _authorized(request):
        return _unauthorized(request)
    return None


async def _job_action(
    request: Request, job_id: int, act: Callable[[int], Awaitable[JobAction]]
) -> Response:
    """Run one operator action through the admin door. A change redirects back (303); an
    action that changed nothing shows the page again with the reason (409), so the page never
    pretends that a retry of a pending job did something."""
    if (refused := _refuse_action(request)) is not None:
        return refused
    try:
        action = await act(job_id)
    except JobNotFound:
        return _error(request, status.HTTP_404_NOT_FOUND, f"Job {job_id} does not exist.")
    if action.changed:
        return _see_other("/")
    return await _index(request, status_code=status.HTTP_409_CONFLICT, notice=action.message)


@router.post("/ui/jobs/{job_id}/retry", response_class=HTMLResponse)
async def retry_job(job_id: int, request: Request) -> Response:
    """Start a failed or cancelled job again with fresh attempts; the local dispatcher is
    woken so it runs now rather than at the next poll."""
    return await _job_action(request, job_id, _runtime(request).admin.retry_job)


@router.post("/ui/jobs/{job_id}/cancel", response_class=HTMLResponse)
async def cancel_job(job_id: int, request: Request) -> Response:
    """Cancel a pending job. A job that started meanwhile is not touched, and the page says
    so instead of pretending it worked."""
    return await _job_action(request, job_id, _runtime(request).admin.cancel_job)


# -- the panels' forms --------------------------------------------------------------------------
def _form_route(name: str, handle: FormHandler) -> Callable[[Request], Awaitable[Response]]:
    """The POST route of one panel's form: the engine decides who may act and reads the form;
    the panel's handler acts. A refusal draws the page again with the reason under the form
    and what was typed still in it (422); anything else goes back to the page (303)."""

    async def post(request: Request) -> Response:
        if (refused := _refuse_action(request)) is not None:
            return refused
        fields = await _form(request)
        if isinstance(fields, HTMLResponse):
            return fields
        try:
            await handle(fields)
        except FormRefused as exc:
            return await _index(request, status_code=UNPROCESSABLE, refusal=(name, exc))
        return _see_other("/")

    return post


def panel_forms(pages: Pages) -> APIRouter:
    """The routes of every panel's form, kept out of the OpenAPI document as the page is."""
    forms = APIRouter(include_in_schema=False)
    for name, path, handle in pages.forms():
        forms.add_api_route(
            path, _form_route(name, handle), methods=["POST"], response_class=HTMLResponse
        )
    return forms
