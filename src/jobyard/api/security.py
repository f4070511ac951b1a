"""Who may call the API, from where, and how big a request may be."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "BodySizeLimit",
    "CrossSiteGuard",
    "is_cross_site",
    "require_token",
    "session_value",
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


def session_value(token: str) -> str:
    """What the dashboard's sign-in cookie holds: derived from the token, so a stolen cookie
    opens the dashboard but does not reveal the API token itself."""
    return hmac.new(token.encode(), b"jobyard dashboard session v1", hashlib.sha256).hexdigest()


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def require_token(request: Request) -> None:
    """FastAPI dependency for every /api route."""
    expected: str | None = request.app.state.api_token
    if expected is not None and not token_matches(bearer(request), expected):
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


class BodySizeLimit:
    """Refuse bodies over `limit` bytes with 413, by Content-Length up front or while the body
    streams in (a chunked upload has no length to check)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0
        started = refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answer 413 ourselves and tell the app the client left: whatever the app
                    # does with that (frameworks turn a body error into 400), it is not sent.
                    refused = True
                    if not started:
                        await _too_large(send, self.limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body larger than {limit} bytes"}}'.encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
