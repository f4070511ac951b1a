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

from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from jobyard.admin import JobAction
from jobyard.api.extensions import FormHandler, FormRefused
from jobyard.api.pages import Pages, Refusal, ages, snapshot
from jobyard.api.security import bearer_matches, presented_token_matches, throttled
from jobyard.api.sessions import SignIns
from jobyard.model import JobNotFound
from jobyard.runtime import Runtime

__all__ = ["COOKIE", "panel_forms", "router"]

# HTML, not JSON: nothing here belongs in the OpenAPI schema.
router = APIRouter(include_in_schema=False)

COOKIE: Final = "jobyard_session"
LIVE_PATH: Final = "/ui/live"
LOGIN_PATH: Final = "/ui/login"
# Starlette renamed HTTP_422_UNPROCESSABLE_ENTITY (and warns on the old name); the number works
# on every supported version.
UNPROCESSABLE: Final = 422

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
        "ago": ages(snap.now),
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
