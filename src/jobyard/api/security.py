"""Who may call the API, and how big a request may be."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fastapi import HTTPException, Request, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimit", "require_token", "session_value", "token_matches"]


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
