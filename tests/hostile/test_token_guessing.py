"""Guessing the token: each client address has a small budget of wrong tokens.

Over real HTTP, a burst of wrong bearer tokens or sign-in attempts turns into 429s with
`Retry-After`, while the right token keeps working for other clients and costs nothing. The
budget's arithmetic (refill, IPv6 grouping, the memory cap) is checked on its own with a clock
the test moves, so no test waits for a refill.

"Another client" is a real one: the test connects from 127.0.0.2, which Linux routes to the
loopback interface like 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest

from jobyard.api.dashboard import COOKIE
from jobyard.api.throttle import FailureBudget, client_key
from tests.live_server import LiveServer, live_server

TOKEN: Final = "guessing-test-token-0123456789"
WRONG: Final = "guessing-test-token-wrong-0000"
BURST: Final = 3
INTERVAL: Final = 60.0  # long: no refill happens during a test


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    settings = {"auth_failures": BURST, "auth_failure_interval": INTERVAL}
    with live_server(
        sqlite_url, tmp_path / "data", token=TOKEN, run_worker=False, server=settings
    ) as live:
        yield live


def client(server: LiveServer, *, source: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=server.url, transport=transport, timeout=10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_burst_of_wrong_bearer_tokens_is_answered_429_until_the_budget_refills(
    server: LiveServer,
) -> None:
    with client(server) as guesser, client(server, source="127.0.0.2") as other:
        codes = [guesser.get("/api/status", headers=bearer(WRONG)).status_code for _ in range(8)]
        assert codes == [401] * BURST + [429] * (8 - BURST)
        throttled = guesser.get("/api/status", headers=bearer(WRONG))
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= INTERVAL
        assert "too many wrong tokens" in throttled.json()["detail"]
        # While throttled, no token is even compared: the right one gets the same 429, so a
        # guess made now cannot tell right from wrong.
        assert guesser.get("/api/status", headers=bearer(TOKEN)).status_code == 429
        # Nothing else changes for that address: no token, no guess, no 429.
        assert guesser.get("/healthz").status_code == 200
        assert guesser.get("/api/status").status_code == 401
        # Another client is not affected, right token or wrong.
        assert other.get("/api/status", headers=bearer(TOKEN)).status_code == 200
        assert other.get("/api/status", headers=bearer(WRONG)).status_code == 401


def test_the_right_token_costs_nothing(server: LiveServer) -> None:
    with client(server) as http:
        for _ in range(50):
            assert http.get("/api/status", headers=bearer(TOKEN)).status_code == 200
        codes = [http.get("/api/status", headers=bearer(WRONG)).status_code for _ in range(4)]
    assert codes == [401] * BURST + [429]


def test_wrong_tokens_in_the_sign_in_form_are_throttled_too(server: LiveServer) -> None:
    with client(server) as guesser, client(server, source="127.0.0.2") as other:
        codes = [guesser.post("/ui/login", data={"token": WRONG}).status_code for _ in range(BURST)]
        assert codes == [401] * BURST
        refused = guesser.post("/ui/login", data={"token": TOKEN})
        assert refused.status_code == 429
        assert "Too many wrong tokens" in refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert COOKIE not in refused.cookies
        # The form and the bearer header draw on the same budget.
        assert guesser.get("/ui/live", headers=bearer(TOKEN)).status_code == 429
        signed_in = other.post("/ui/login", data={"token": TOKEN})
        assert signed_in.status_code == 303
        assert other.get("/ui/live").status_code == 200


def test_a_signed_in_browser_is_not_throttled_with_its_address(server: LiveServer) -> None:
    """The session cookie is not a guess: a browser that signed in keeps working even when
    something else at its address (a script with an old token) used up the budget."""
    with client(server) as browser:
        assert browser.post("/ui/login", data={"token": TOKEN}).status_code == 303
        for _ in range(BURST + 2):
            browser.get("/api/status", headers=bearer(WRONG))
        assert browser.get("/ui/live").status_code == 200


# -- the budget's arithmetic, with a clock the test moves --------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_spent_budget_comes_back_one_wrong_token_per_interval() -> None:
    clock = Clock()
    budget = FailureBudget(3, 10.0, clock=clock)
    assert budget.retry_after("a") == 0
    for _ in range(3):
        budget.failed("a")
    assert budget.retry_after("a") == pytest.approx(10.0)
    assert budget.retry_after_header("a") == "10"
    assert budget.retry_after("b") == 0  # another address has its own budget
    clock.now += 4
    assert budget.retry_after("a") == pytest.approx(6.0)
    clock.now += 6
    assert budget.retry_after("a") == 0  # one wrong token back
    budget.failed("a")
    assert budget.retry_after("a") == pytest.approx(10.0)
    clock.now += 30
    for _ in range(3):  # all three back after three intervals, and no more than three
        assert budget.retry_after("a") == 0
        budget.failed("a")
    assert budget.retry_after("a") > 0


def test_the_budgets_kept_are_capped_and_full_ones_go_first() -> None:
    clock = Clock()
    budget = FailureBudget(2, 10.0, max_clients=2, clock=clock)
    budget.failed("old")
    budget.failed("old")
    budget.failed("recovered")
    clock.now += 10  # "recovered" is full again; "old" has one of two back
    budget.failed("new")
    assert budget.retry_after("old") == 0
    budget.failed("old")
    assert budget.retry_after("old") > 0  # kept: only the full budget was dropped
    budget.failed("newest")  # over the cap with no full budget left: the oldest goes
    assert budget.retry_after("old") == 0


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
    ],
)
def test_ipv6_clients_share_one_budget_per_64(host: str | None, key: str) -> None:
    assert client_key(host) == key
