"""What one client connection may hold, and how it ends: the guards uvicorn lacks.

uvicorn waits for a request's headers, and for the rest of a body its app did not read, as long
as the client likes, takes as many connections as arrive, and accepts headers of any size. A
few hundred clients that send a byte now and then hold the server forever. So `jobyard serve`
runs uvicorn with the protocol below, uvicorn's own httptools protocol plus:

- **Header deadline.** From the moment a connection opens, and again once a response is sent
  and the request fully read, the next request's headers must be complete within
  `header_timeout`, however the bytes trickle in. A connection that sent part of a request is
  answered 408; one that sent nothing is just closed.
- **Header size.** More than `max_header_bytes` of request line and headers is answered 431.
- **Body backstop.** A body must be complete `body_timeout` (plus a second of grace) after its
  headers. `BodyLimits` in `jobyard.api.security` answers 408 at the deadline when the app is
  waiting for the body; this timer closes the connection when nobody is, such as a body still
  trickling in after the app answered without reading it.
- **Connection cap.** A connection beyond `max_connections` open ones is answered 503 and
  closed at once, before it can hold anything.
- **WebSockets.** A connection upgraded to a WebSocket (for an app with WebSocket routes, run
  through `serve_app`) leaves these guards for uvicorn's WebSocket protocol and its timeouts.
- **Lingering close.** When the app answers before the body is in (413, 408, a 401 with
  `Connection: close`) and the connection is to close, closing at once would make the client's
  kernel reset the connection while it is still sending, and the client would likely see the
  reset instead of the answer. So the server half-closes (the answer is complete), then reads
  and discards what the client still sends until it closes its end, goes quiet for
  `linger_idle`, has sent `linger_bytes` or `linger_time` has passed: the lingering close of
  Apache and nginx.

This leans on uvicorn's internals (`HttpToolsProtocol`'s parser callbacks, its `cycle`, and
that every close goes through `transport.close()`), which is why pyproject.toml pins uvicorn
to the versions tested. `tests/test_http_guards.py` proves each guard over real sockets, so an
upgrade that breaks one fails there.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from jobyard.api.settings import ServerSettings

__all__ = ["ConnectionLimits", "guarded_protocol"]

# The body's own deadline is kept by BodyLimits, inside the app; this timer only backs it up.
BODY_GRACE = 1.0

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The bounds `guarded_protocol` enforces on every connection (seconds and bytes)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    max_header_bytes: int = 64 * 1024
    linger_idle: float = 2.0
    linger_time: float = 10.0
    linger_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_connections=settings.max_connections,
        )


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol class to give `uvicorn.Config(http=...)`."""

    class Guarded(GuardedProtocol):
        LIMITS = limits

    return Guarded


class _CloseHook(asyncio.Transport):
    """The transport as uvicorn sees it: everything goes to the real one, except that a close
    asks the protocol first, which may linger before it really closes."""

    def __init__(self, raw: asyncio.Transport, on_close: Callable[[], None]) -> None:
        super().__init__()
        self._raw = raw
        self._on_close = on_close
        self._closing = False

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._on_close()

    def is_closing(self) -> bool:
        return self._closing or self._raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._raw.get_extra_info(name, default)

    def write(self, data: Buffer) -> None:
        self._raw.write(data)

    def writelines(self, list_of_data: Iterable[Buffer]) -> None:
        self._raw.writelines(list_of_data)

    def write_eof(self) -> None:
        self._raw.write_eof()

    def can_write_eof(self) -> bool:
        return self._raw.can_write_eof()

    def abort(self) -> None:
        self._raw.abort()

    def is_reading(self) -> bool:
        return self._raw.is_reading()

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._raw.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._raw.get_protocol()


def _answer(code: int, text: str) -> bytes:
    """A whole response written straight to the socket, for when no request reached the app."""
    body = text.encode()
    return (
        f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guards described in the module docstring.

    Where a connection is: waiting for a request's head (`_head`, the header deadline runs),
    reading a body (`_body_pending`, the body backstop runs), or neither (the app has the
    request). Once lingering, the parser is fed nothing more, so nothing the client still
    sends can become a request.
    """

    LIMITS: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._raw: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._head = True
        self._head_bytes = 0
        self._body_pending = False
        self._lingering = False
        self._linger_bytes = 0
        self._linger_last = 0.0
        self._linger_end = 0.0

    # -- connection ------------------------------------------------------------------------
    def connection_made(  # type: ignore[override]  # as uvicorn's own: a Transport, not Base
        self, transport: asyncio.Transport
    ) -> None:
        self._raw = transport
        super().connection_made(_CloseHook(transport, self._close_requested))
        if len(self.connections) > self.LIMITS.max_connections:
            self._answer_and_close(503, "Too many connections; try again shortly.")
            return
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._lingering = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discard(data)
            return
        if self._head:
            self._head_bytes += len(data)
        super().data_received(data)
        too_large = self._head and self._head_bytes > self.LIMITS.max_header_bytes
        if too_large and not self.transport.is_closing():
            self._answer_and_close(431, "Request headers too large.")

    def handle_websocket_upgrade(self) -> None:
        # The connection becomes a WebSocket with a protocol (and timeouts) of its own: none of
        # the HTTP deadlines here may close it later.
        self._cancel_timer()
        self._head = self._body_pending = False
        super().handle_websocket_upgrade()

    def shutdown(self) -> None:
        if self._lingering:
            self._close_now()  # the server is stopping: no more waiting for this client
            return
        super().shutdown()

    # -- parser and response callbacks -----------------------------------------------------
    def on_headers_complete(self) -> None:
        self._head = False
        self._body_pending = True
        self._arm(self.LIMITS.body_timeout + BODY_GRACE, self._close_now)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_pending = False
        self._cancel_timer()
        super().on_message_complete()
        # No cycle yet for a WebSocket upgrade: handle_websocket_upgrade comes next.
        answered = self.cycle is not None and self.cycle.response_complete
        if answered and not self.transport.is_closing():
            self._wait_for_head()  # answered before the body was in; the body is in now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self._body_pending:
            return  # closing, or the body backstop still runs
        if self.cycle.response_complete:  # and no pipelined request is waiting
            self._wait_for_head()

    # -- timers ----------------------------------------------------------------------------
    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wait_for_head(self) -> None:
        self._head = True
        self._head_bytes = 0
        self._arm(self.LIMITS.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._head_bytes:
            self._answer_and_close(408, "Request headers not received in time.")
        else:
            self._close_now()

    # -- closing ---------------------------------------------------------------------------
    def _answer_and_close(self, code: int, text: str) -> None:
        assert self._raw is not None
        self._raw.write(_answer(code, text))
        self._close_now()

    def _close_now(self) -> None:
        self._cancel_timer()
        self._lingering = False
        assert self._raw is not None
        self._raw.close()

    def _close_requested(self) -> None:
        """uvicorn closes: linger if the app answered while the body was still coming."""
        assert self._raw is not None
        answered_early = self._body_pending and self.cycle is not None
        if answered_early and self.cycle.response_complete and self._raw.can_write_eof():
            self._linger()
        else:
            self._close_now()

    def _linger(self) -> None:
        assert self._raw is not None
        self._cancel_timer()
        self._lingering = True
        now = self.loop.time()
        self._linger_last = now
        self._linger_end = now + self.LIMITS.linger_time
        self._raw.write_eof()  # the answer is complete: the client may read it and close
        self.flow.resume_reading()
        self._arm(self.LIMITS.linger_idle, self._linger_check)

    def _discard(self, data: bytes) -> None:
        self._linger_bytes += len(data)
        self._linger_last = self.loop.time()
        if self._linger_bytes > self.LIMITS.linger_bytes:
            self._close_now()

    def _linger_check(self) -> None:
        self._timer = None
        now = self.loop.time()
        quiet_until = self._linger_last + self.LIMITS.linger_idle
        if now >= self._linger_end or now >= quiet_until:
            self._close_now()
        else:
            self._arm(min(quiet_until, self._linger_end) - now, self._linger_check)
