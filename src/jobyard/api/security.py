"""Who may call the API, from where, and how big and how slow a request body may be."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any, Final
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, status
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobyard.api.throttle import FailureBudget, client_key

__all__ = [
    "BodyLimits",
    "CrossSiteGuard",
    "bearer_matches",
    "is_cross_site",
    "presented_token_matches",
    "require_token",
    "throttled",
    "token_matches",
]

# Methods that never change state; every other method is checked by CrossSiteGuard.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing says nothing about the token."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _budget(request: Request) -> tuple[FailureBudget, str]:
    budget: FailureBudget = request.app.state.auth_failures
    return budget, client_key(request.client.host if request.client else None)


def throttled(request: Request) -> HTTPException | None:
    """The 429 to answer when this client has used up its wrong tokens, else None.

    Checked before any token is compared, so a guess made while throttled learns nothing."""
    budget, client = _budget(request)
    if budget.retry_after(client) <= 0:
        return None
    return HTTPException(
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        detail="too many wrong tokens from this address; try again later",
        headers={"Retry-After": budget.retry_after_header(client)},
    )


def presented_token_matches(request: Request, presented: str | None, expected: str) -> bool:
    """Check a token the client presented (header or form), spending one of its wrong tokens
    when it does not match. Raises the 429 of `throttled` instead of checking while the
    client's budget is spent. Presenting nothing is not a guess and costs nothing."""
    if presented is None:
        return False
    if (refusal := throttled(request)) is not None:
        raise refusal
    if token_matches(presented, expected):
        return True
    budget, client = _budget(request)
    budget.failed(client)
    return False


def bearer_matches(request: Request, expected: str) -> bool:
    """Whether the request's bearer token is `expected`; throttled like every token check."""
    return presented_token_matches(request, bearer(request), expected)


async def require_token(request: Request) -> None:
    """FastAPI dependency for every /api route."""
    expected: str | None = request.app.state.api_token
    if expected is not None and not bearer_matches(request, expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _host_port(netloc: str, scheme: str) -> str:
    """`netloc` lowercased, with the scheme's default port made explicit, so that
    `http://example.com` and `Host: example.com:80` compare equal."""
    netloc = netloc.lower()
    if netloc.endswith("]") or ":" not in netloc.rpartition("]")[2]:
        port = _DEFAULT_PORTS.get(scheme)
        return f"{netloc}:{port}" if port else netloc
    return netloc


def is_cross_site(sec_fetch_site: str | None, origin: str | None, host: str | None) -> bool:
    """True when a browser says the request comes from another site (or another origin).

    `Sec-Fetch-Site` decides when the browser sends it: only `same-origin` and `none` (the user
    typed or bookmarked the address) pass. Otherwise `Origin` decides: `null` (a sandboxed or
    privacy-stripped page) is refused, and so is an origin whose host and port differ from the
    request's `Host`. A request with neither header comes from a tool (curl, httpx, the CLI),
    not from a page in someone's browser, and passes.
    """
    if sec_fetch_site is not None:
        return sec_fetch_site.strip().lower() not in ("same-origin", "none")
    if origin is None:
        return False
    origin = origin.strip()
    if origin == "null":
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return True
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc or not host:
        return True
    return _host_port(parts.netloc, scheme) != _host_port(host.strip(), scheme)


class CrossSiteGuard:
    """Refuse, with 403, every state-changing request that a browser says comes from another
    site, on every route (API and dashboard), whether or not a token is set.

    Why without a token too: a server without one listens on loopback, and any web page open in
    the operator's browser can still send requests to 127.0.0.1. Why for bodyless POSTs: a
    cross-site form or `fetch(..., {mode: "no-cors"})` can send those without a preflight, and
    job ids are sequential, so they are easy to guess.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if not is_cross_site(
            headers.get("sec-fetch-site"), headers.get("origin"), headers.get("host")
        ):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path.startswith("/api/"):
            body = b'{"detail":"cross-site request refused"}'
            kind = b"application/json"
        else:
            body = b"Cross-site request refused."
            kind = b"text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class BodyLimits:
    """Refuse bodies over `max_bytes` with 413, by Content-Length up front or while the body
    streams in (a chunked upload has no length to check), and bodies that have not fully
    arrived `timeout` seconds after the request began with 408.

    Both answers carry `Connection: close`: the rest of the body is never read as a request.
    The server reads and discards what the client still sends for a moment before closing
    (see `jobyard.api.connections`), so a client busy uploading sees the answer rather than a
    reset connection. The deadline covers only the body; once it is in, the app may take as
    long as it needs.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _refuse(send, 413, f"request body larger than {self.max_bytes} bytes")
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        seen = 0
        started = refused = body_done = False

        async def refuse(code: int, detail: str) -> Message:
            # Answer ourselves and tell the app the client left: whatever the app does with
            # that (frameworks turn a body error into 400), it is not sent.
            nonlocal refused
            refused = True
            if not started:
                await _refuse(send, code, detail)
            return {"type": "http.disconnect"}

        async def limited_receive() -> Message:
            nonlocal seen, body_done
            if refused:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()  # after the body: only a disconnect, whenever it comes
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return await refuse(
                    408, f"the request body did not arrive within {self.timeout:g} seconds"
                )
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > self.max_bytes:
                    return await refuse(413, f"request body larger than {self.max_bytes} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except ClientDisconnect:
            if not refused:
                raise
            # Expected: we answered and told the app the client left. Letting it escape
            # would log a traceback for every slow or oversized form body.


async def _refuse(send: Send, code: int, detail: str) -> None:
    body = f'{{"detail":"{detail}"}}'.encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
