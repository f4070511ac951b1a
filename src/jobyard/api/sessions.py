"""The dashboard's sign-ins: random session ids that this server process remembers.

Signing in with the token starts a session: a random id (256 bits) that the browser keeps in
its cookie and the server keeps in memory with an expiry. The cookie is therefore worth nothing
once the session ends, which happens when the user signs out, when `lifetime` has passed since
sign-in, or when the server process stops. Sign-ins belong to one process: behind a load
balancer with several servers, a browser must keep talking to the one it signed in on.

Ids are kept as their SHA-256 digests. A dictionary lookup compares keys with `==`, whose
timing could in principle tell an attacker how much of a guess was right; comparing digests
reveals nothing about the id itself, and a leaked memory dump holds no usable cookie.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

__all__ = ["SESSION_LIFETIME", "SignIns"]

SESSION_LIFETIME = 12 * 3600.0  # seconds: a working day, then sign in again


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()


class SignIns:
    """The live sessions of this process, at most `max_sessions` (the oldest ends first)."""

    def __init__(
        self,
        *,
        lifetime: float = SESSION_LIFETIME,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        self.clock = clock
        self._expiry: dict[bytes, float] = {}

    def start(self) -> str:
        """A new session's id, for the cookie."""
        now = self.clock()
        self._forget_expired(now)
        while len(self._expiry) >= self.max_sessions:
            del self._expiry[next(iter(self._expiry))]
        session_id = secrets.token_urlsafe(32)
        self._expiry[_digest(session_id)] = now + self.lifetime
        return session_id

    def valid(self, session_id: str | None) -> bool:
        """Whether `session_id` is a session of this process that has not ended."""
        if not session_id:
            return False
        key = _digest(session_id)
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if self.clock() >= expiry:
            del self._expiry[key]
            return False
        return True

    def end(self, session_id: str | None) -> None:
        """End the session, if there is one: its cookie no longer opens anything."""
        if session_id:
            self._expiry.pop(_digest(session_id), None)

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, expiry in self._expiry.items() if now >= expiry]:
            del self._expiry[key]

    def __len__(self) -> int:
        return len(self._expiry)
