"""What a slow, greedy or hasty client can hold on the real server, over real sockets.

The server here is the one `jobyard serve` runs (uvicorn with jobyard's connection guards,
`jobyard.api.connections`), with timeouts shortened through the server settings. Waits are on
socket events: a read that returns the answer, or b"" when the server closes; the only
deadlines are the configured timeouts plus a margin for a busy machine.

These tests also guard the uvicorn internals the guards rely on: an upgrade that changes them
fails here, which is why pyproject.toml pins uvicorn to the versions tested.
"""

from __future__ import annotations

import http.client
import inspect
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jobyard.api import ServerSettings
from jobyard.api.connections import ConnectionLimits
from jobyard.api.server import bind, build_server
from tests.live_server import LiveServer, live_server

SHORT: Final = 0.5  # the header and body timeouts these tests configure, in seconds
MARGIN: Final = 2.5  # how much later than due a close may come on a busy machine
LINGER_IDLE: Final = 2.0  # jobyard.api.connections.ConnectionLimits.linger_idle


@pytest.fixture
def short(sqlite_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A server whose header and body timeouts are half a second."""
    settings = {"header_timeout": SHORT, "body_timeout": SHORT}
    with live_server(sqlite_url, tmp_path / "data", run_worker=False, server=settings) as live:
        yield live


def address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(address(server), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took; fails if it is
    still open after `within` seconds."""
    started = time.monotonic()
    received = b""
    sock.settimeout(within)
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"still open after {within}s; received {received[:80]!r}")
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def trickle(sock: socket.socket, data: bytes, every: float, within: float) -> tuple[bytes, float]:
    """Send `data` a byte at a time, one every `every` seconds, until the server answers or
    closes; return what it sent until it closed, and when (from the first byte)."""
    started = time.monotonic()
    for byte in data:
        readable, _, _ = select.select([sock], [], [], every)
        if readable:
            break
        try:
            sock.send(bytes([byte]))
        except OSError:
            break
    else:
        pytest.fail("the server let the whole trickle through")
    received, _ = until_closed(sock, within)
    return received, time.monotonic() - started


def healthy(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz").json()["status"] == "ok"


# -- request heads -----------------------------------------------------------------------------
def test_a_half_sent_request_head_is_answered_408_and_closed_after_the_header_timeout(
    short: LiveServer,
) -> None:
    with connect(short) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        received, took = until_closed(sock, SHORT + MARGIN)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"connection: close" in received.lower()
    assert SHORT * 0.8 <= took <= SHORT + MARGIN
    healthy(short)


def test_trickling_a_head_does_not_extend_the_header_timeout(short: LiveServer) -> None:
    """uvicorn's own keep-alive timer restarts with every byte; the header deadline does not."""
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
    with connect(short) as sock:
        received, took = trickle(sock, head, every=0.05, within=MARGIN)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert took <= SHORT + MARGIN


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    short: LiveServer,
) -> None:
    with connect(short) as sock:
        received, took = until_closed(sock, SHORT + MARGIN)
    assert received == b""  # nothing was asked, so nothing is answered
    assert took >= SHORT * 0.8


def test_after_a_response_the_next_head_has_the_same_deadline(short: LiveServer) -> None:
    with connect(short) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first
        received, took = trickle(sock, b"GET /healthz HTTP/1.1\r\n" + b"X" * 200, 0.05, MARGIN)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert took <= SHORT + MARGIN


def test_request_heads_over_64_kib_are_answered_431(short: LiveServer) -> None:
    """uvicorn keeps every header byte in memory, with no limit of its own."""
    with connect(short) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000)
        received, _ = until_closed(sock, MARGIN)
    assert received.startswith(b"HTTP/1.1 431 "), received
    healthy(short)


# -- request bodies ----------------------------------------------------------------------------
def post_head(path: str, length: int, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_stalled_body_is_answered_408_after_the_body_timeout(short: LiveServer) -> None:
    with connect(short) as sock:
        sock.sendall(post_head("/api/jobs", 100) + b'{"type":')
        received, took = until_closed(sock, SHORT + LINGER_IDLE + MARGIN)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"did not arrive within 0.5 seconds" in received
    assert b"connection: close" in received.lower()
    assert SHORT * 0.8 <= took <= SHORT + LINGER_IDLE + MARGIN
    healthy(short)


def test_trickling_a_body_does_not_extend_the_body_timeout(short: LiveServer) -> None:
    with connect(short) as sock:
        sock.sendall(post_head("/api/jobs", 1000))
        received, took = trickle(sock, b" " * 1000, every=0.05, within=LINGER_IDLE + MARGIN)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert took <= SHORT + LINGER_IDLE + MARGIN


def test_a_body_still_trickling_after_an_early_answer_is_cut_off(short: LiveServer) -> None:
    """No route reads this body (404), so no 408 can be sent: the connection is closed once
    the body is overdue (the body timeout plus a second's grace)."""
    with connect(short) as sock:
        sock.sendall(post_head("/nowhere", 1000))
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 404 "), answer
        started = time.monotonic()
        received, _ = trickle(sock, b" " * 1000, every=0.05, within=MARGIN)
    assert received == b""
    assert time.monotonic() - started <= SHORT + 1.0 + MARGIN


def test_refusing_a_form_body_logs_no_traceback(
    short: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The dashboard's form handler raises when told the client left; after a 408 or 413 that
    is expected, and must not log a traceback per slow or oversized request."""
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)  # uvicorn's loggers do not propagate to the root
    try:
        form = "application/x-www-form-urlencoded"
        with connect(short) as sock:
            sock.sendall(post_head("/ui/workspaces", 100, form) + b"name=")
            stalled, _ = until_closed(sock, SHORT + LINGER_IDLE + MARGIN)
        with httpx.Client(base_url=short.url, timeout=10) as client:
            chunked = client.post(
                "/ui/workspaces",
                content=(b"name=" + b"x" * 65536 for _ in range(48)),
                headers={"content-type": form},
            )
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert stalled.startswith(b"HTTP/1.1 408 "), stalled
    assert chunked.status_code == 413
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_a_body_that_arrives_in_time_is_served(short: LiveServer) -> None:
    body = b'{"type":"workspace_init","payload":{"workspaceId":"w"}}'
    with connect(short) as sock:
        sock.sendall(post_head("/api/jobs", len(body)))
        sock.sendall(body)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 202 "), answer


# -- how many connections ----------------------------------------------------------------------
def test_connections_beyond_the_cap_are_answered_503_and_closed(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = {"max_connections": 3, "header_timeout": 30.0}
    with live_server(sqlite_url, tmp_path / "data", run_worker=False, server=settings) as live:
        held = [connect(live) for _ in range(3)]
        try:
            for sock in held:  # each is accepted and counted: it can be served
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            with connect(live) as extra:
                received, took = until_closed(extra, MARGIN)
            assert received.startswith(b"HTTP/1.1 503 "), received
            assert took < 1.0  # refused at once, not after a timeout
        finally:
            closed = held.pop()
            closed.close()
        # One slot is free again as soon as the server has seen that close.
        deadline = time.monotonic() + 10
        while True:
            try:
                with httpx.Client(base_url=live.url, timeout=10) as client:
                    if client.get("/healthz").status_code == 200:
                        break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no slot came free"
            time.sleep(0.05)
        for sock in held:
            sock.close()


# -- answering before the body is in -----------------------------------------------------------
def test_every_client_still_sending_a_too_large_body_sees_the_413(short: LiveServer) -> None:
    """A 3 MB body, 30 times, from http.client with `Connection: close` (as urllib sends):
    closing the moment the 413 is written reset the connection under the client while it was
    still sending, so it saw `Connection reset by peer` instead of the answer."""
    body = b"x" * 3_000_000
    host, port = address(short)
    seen: dict[str, int] = {}
    for _ in range(30):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request(
                "POST",
                "/api/jobs",
                body=body,
                headers={"Content-Type": "application/json", "Connection": "close"},
            )
            response = conn.getresponse()
            outcome = f"{response.status} {response.getheader('connection')}"
            assert b"larger than" in response.read()
        except OSError as exc:
            outcome = type(exc).__name__
        finally:
            conn.close()
        seen[outcome] = seen.get(outcome, 0) + 1
    assert seen == {"413 close": 30}


def test_a_keep_alive_client_sending_a_too_large_body_sees_the_413(short: LiveServer) -> None:
    body = b"x" * 3_000_000
    with httpx.Client(base_url=short.url, timeout=10) as client:
        for _ in range(10):
            response = client.post("/api/jobs", content=body, headers={"content-type": "x/y"})
            assert response.status_code == 413
            assert response.headers["connection"] == "close"
    healthy(short)


def test_a_client_that_keeps_sending_after_the_413_is_cut_off(short: LiveServer) -> None:
    """Lingering is bounded: a client that never stops gets the answer, then a close once it
    has sent `linger_bytes` more (or `linger_time` has passed)."""
    limits = ConnectionLimits()
    with connect(short) as sock:
        sock.sendall(post_head("/api/jobs", 100 * limits.linger_bytes))
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413 "), answer
        started = time.monotonic()
        sent = 0
        cut_off = False
        try:
            while time.monotonic() - started < 30:
                sent += sock.send(b"x" * 65536)
        except (ConnectionResetError, BrokenPipeError):
            cut_off = True  # the server stopped reading and closed
    assert cut_off
    assert time.monotonic() - started < limits.linger_time + MARGIN
    # What the server read, plus what the two kernels' socket buffers held at the end.
    assert sent < limits.linger_bytes + 32 * 1024 * 1024


# -- WebSockets -----------------------------------------------------------------------------
async def echo_websocket_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket echo, for the upgrade test: jobyard's own app has no WebSocket routes."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message.get("text") or ""})


def test_a_websocket_outlives_the_http_deadlines() -> None:
    settings = ServerSettings(host="127.0.0.1", port=0, header_timeout=SHORT, body_timeout=SHORT)
    sockets = bind("127.0.0.1", 0)
    server = build_server(echo_websocket_app, settings, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        port = sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 101 ")
            # Past every HTTP deadline (header and body timeouts, the body backstop)...
            readable, _, _ = select.select([sock], [], [], SHORT + 1.0 + 1.0)
            assert not readable, sock.recv(100)  # ...nothing came, not even a close
            mask = b"\x01\x02\x03\x04"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"ping"))
            sock.sendall(b"\x81\x84" + mask + payload)  # a masked text frame, "ping"
            assert sock.recv(100) == b"\x81\x04ping"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        for sock in sockets:
            sock.close()


# -- the uvicorn internals the guards use ------------------------------------------------------
def test_the_uvicorn_internals_the_guards_rely_on_are_there() -> None:
    """A readable failure when uvicorn changes what `jobyard.api.connections` and
    `jobyard.api.server` build on; the tests above show whether the behaviour still holds."""
    for name in (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_headers_complete",
        "on_message_complete",
        "on_response_complete",
        "handle_websocket_upgrade",
        "shutdown",
    ):
        assert callable(getattr(HttpToolsProtocol, name, None)), name
    assert list(inspect.signature(HttpToolsProtocol.__init__).parameters) == [
        "self",
        "config",
        "server_state",
        "app_state",
        "_loop",
    ]
    assert "sockets" in inspect.signature(uvicorn.Server.run).parameters
    assert callable(uvicorn.Server.capture_signals)
    assert callable(uvicorn.Server.handle_exit)
