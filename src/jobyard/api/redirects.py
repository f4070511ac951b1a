"""Redirects that name no host, so a forged `Host` header cannot steer them.

The framework answers `/api/status/` with a redirect to `/api/status`, and builds that
`Location` from the request's own `Host` header. With a token configured any `Host` is
accepted, so `Host: attacker.example` would get `Location: http://attacker.example/...`: a
cache or proxy in between could then serve that redirect to others. This middleware rewrites
every absolute `Location` that points at the request's own host into a path (and query), which
browsers resolve against the address they actually used. Redirects elsewhere (the app makes
none) are left alone.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import URL
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RelativeRedirects"]


class RelativeRedirects:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        own = URL(scope=scope).netloc.lower()

        async def send_relative(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = [
                    (name, _relative(value, own) if name.lower() == b"location" else value)
                    for name, value in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_relative)


def _relative(location: bytes, own: str) -> bytes:
    parts = urlsplit(location.decode("latin-1"))
    if not parts.netloc or parts.netloc.lower() != own:
        return location
    # One leading slash: "//host/path" would be read as another host again.
    path = "/" + parts.path.lstrip("/")
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")
