"""Hand-written attacks on the real HTTP server (uvicorn, a worker node, both stores).

Each attack is refused with a 4xx and a `detail` saying why, and stores nothing: the rows in
jobyard_jobs, jobyard_workspaces and jobyard_sessions are counted straight from the database
before and after. Where something hostile-looking is *accepted* on purpose (a past run_at, a
template name that is only odd), the test pins exactly what is stored and shows it is harmless.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx
import pytest

from jobyard.api import ServerSettings
from jobyard.queue import JOB_TYPE_PATTERN
from tests.hostile.helpers import (
    entity_counts,
    eventually,
    refused_with_detail,
    send,
    settled,
    snapshot,
)
from tests.live_server import LiveServer

JSON: Final = {"content-type": "application/json"}
FORM: Final = {"content-type": "application/x-www-form-urlencoded"}
BODY_LIMIT: Final = int(ServerSettings.model_fields["max_body_bytes"].default)
DEPTH: Final = 100_000

SQL_ATTACKS: Final = [
    "'; DROP TABLE jobyard_jobs; --",
    "x' OR '1'='1",
    "1; DELETE FROM jobyard_jobs",
    '"; DROP TABLE jobyard_workspaces; --',
    "$$; DROP TABLE jobyard_jobs; $$",
    "*/ DROP TABLE jobyard_jobs /*",
    "%",
    "_",
    "workspace%",
    "workspace_ini_",
    "\\",
    "\\'; DROP TABLE jobyard_jobs; --",
    "\u2019; DROP TABLE jobyard_jobs; --",  # right single quotation mark
    "\u02bc OR 1=1 --",  # modifier letter apostrophe
    "\uff07; DROP TABLE jobyard_jobs; --",  # fullwidth apostrophe
]


@contextmanager
def stores_nothing(url: str) -> Iterator[None]:
    """The block may send anything; afterwards no row was added or removed, and every table
    is still there."""
    before, tables = snapshot(url)
    assert {"jobyard_jobs", "jobyard_workspaces", "jobyard_sessions"} <= tables
    yield
    assert snapshot(url) == (before, tables)


def post_raw(server: LiveServer, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return send(server, "POST", path, content=body, headers=headers)


def raw_status(server: LiveServer, method: str, path: str, length: int, body: bytes) -> int:
    """Send a request whose Content-Length lies (httpx will not), and read the status."""
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def assert_healthy(server: LiveServer) -> None:
    with server.client() as http:
        assert http.get("/healthz").json()["status"] == "ok"
        assert http.get("/api/status").status_code == 200
        assert http.get("/api/jobs", params={"limit": 1}).status_code == 200


def pending_job(server: LiveServer) -> dict[str, Any]:
    """A job that stays pending (due in 50 years), for filters to (not) find."""
    with server.client() as http:
        created = http.post(
            "/api/jobs",
            json={
                "type": "workspace_init",
                "payload": {"workspaceId": "hostile-filter-target"},
                "run_at": "2075-01-01T00:00:00Z",
            },
        )
    assert created.status_code == 202, created.text
    job: dict[str, Any] = created.json()
    return job


# -- SQL metacharacters ----------------------------------------------------------------------
def test_sql_metacharacters_as_job_types_and_names_are_refused(
    server: LiveServer, module_db_url: str
) -> None:
    with stores_nothing(module_db_url), server.client() as http:
        for attack in SQL_ATTACKS:
            job = http.post("/api/jobs", json={"type": attack, "payload": {}})
            assert "not registered" in refused_with_detail(job, 422), attack
            if attack == "workspace_ini_":
                continue  # a fine workspace name: only a LIKE pattern would make it special
            workspace = http.post("/api/workspaces", json={"name": attack})
            assert "safe directory name" in refused_with_detail(workspace, 422), attack


def test_sql_metacharacters_in_filters_cursors_and_ids_match_nothing(
    server: LiveServer, module_db_url: str
) -> None:
    target = pending_job(server)
    with stores_nothing(module_db_url), server.client() as http:
        found = http.get("/api/jobs", params={"type": "workspace_init", "limit": 500}).json()
        assert target["id"] in [j["id"] for j in found["jobs"]]  # the filter does work
        for attack in SQL_ATTACKS:
            if JOB_TYPE_PATTERN.fullmatch(attack):
                # A valid name is compared for equality, never as a LIKE pattern.
                listed = http.get("/api/jobs", params={"type": attack})
                assert listed.json() == {"jobs": [], "next": None}, attack
            else:
                # Not a job type name: refused before it reaches the database.
                refused_with_detail(http.get("/api/jobs", params={"type": attack}), 422)
            for param in ("status", "after", "limit"):
                refused_with_detail(http.get("/api/jobs", params={param: attack}), 422)
            refused_with_detail(http.get("/api/workspaces", params={"limit": attack}), 422)
            segment = quote(attack, safe="")
            refused_with_detail(http.get(f"/api/workspaces/{segment}"), 404, 422)
            refused_with_detail(http.get(f"/api/sessions/{segment}"), 404, 422)
            refused_with_detail(http.post(f"/api/workspaces/{segment}/sessions"), 404, 422)
            refused_with_detail(http.get(f"/api/jobs/{segment}"), 404, 422)
            refused_with_detail(http.post(f"/api/jobs/{segment}/cancel"), 404, 422)
            refused_with_detail(http.post(f"/api/jobs/{segment}/retry"), 404, 422)
        # Non-ASCII digits are not digits to the cursor, and an overlong one is refused.
        for cursor in ("\u0661\u0662\u0663", "1 OR 1=1", "9" * 21, "99999999999999999999"):
            refused_with_detail(http.get("/api/jobs", params={"after": cursor}), 422)


def test_nul_in_ids_and_filters_is_refused_not_a_crash(
    server: LiveServer, module_db_url: str, backend: str, request: pytest.FixtureRequest
) -> None:
    with stores_nothing(module_db_url):
        answers = {
            "type filter": send(server, "GET", "/api/jobs", params={"type": "a\x00b"}),
            "workspace id": send(server, "GET", "/api/workspaces/ws%00x"),
            "session id": send(server, "GET", "/api/sessions/se%00x"),
            "new session": send(server, "POST", "/api/workspaces/ws%00x/sessions"),
        }
    codes = {what: r.status_code for what, r in answers.items()}
    assert all(code < 500 for code in codes.values()), codes
    assert answers["type filter"].json().get("jobs", []) == []
    for what in ("workspace id", "session id", "new session"):
        refused_with_detail(answers[what], 404, 422)


# -- bodies that are not what they claim -----------------------------------------------------
DEEP_BODIES: Final = {
    "unclosed-array": b"[" * DEPTH,
    "closed-array-payload": b'{"type":"workspace_init","payload":'
    + b"[" * DEPTH
    + b"]" * DEPTH
    + b"}",
    "nested-objects": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
}
UNDECODABLE: Final = {
    "bad-utf8-value": b'{"type":"workspace_init","payload":{"workspaceId":"\xff\xfe"}}',
    "bad-utf8-key": b'{"\xc3\x28":1}',
    "overlong-slash": b'{"name":"\xc0\xaf"}',
    "truncated-sequence": b'{"name":"\xe2\x82"}',
    "int-over-4300-digits": b'{"type":"workspace_init","payload":' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
@pytest.mark.parametrize("path", ["/api/jobs", "/api/workspaces"])
def test_deeply_nested_json_is_refused_and_the_server_stays_healthy(
    server: LiveServer, module_db_url: str, path: str, body: bytes
) -> None:
    assert len(body) < BODY_LIMIT  # refused for its depth, not its size
    with stores_nothing(module_db_url):
        response = post_raw(server, path, body, JSON)
    refused_with_detail(response, 400, 413, 422)
    assert_healthy(server)


@pytest.mark.parametrize("body", UNDECODABLE.values(), ids=UNDECODABLE.keys())
@pytest.mark.parametrize("path", ["/api/jobs", "/api/workspaces"])
def test_undecodable_bodies_are_refused_never_a_server_error(
    server: LiveServer, module_db_url: str, path: str, body: bytes
) -> None:
    with stores_nothing(module_db_url):
        response = post_raw(server, path, body, JSON)
    refused_with_detail(response, 400, 422)


def test_an_undecodable_dashboard_form_is_refused(server: LiveServer, module_db_url: str) -> None:
    with stores_nothing(module_db_url):
        response = post_raw(server, "/ui/workspaces", b"name=\xff\xfe&template=\xc0\xaf", FORM)
    assert response.status_code == 400
    assert "could not be read" in response.text


@pytest.mark.parametrize(
    "body",
    [
        DEEP_BODIES["unclosed-array"],
        UNDECODABLE["bad-utf8-value"],
        UNDECODABLE["int-over-4300-digits"],
    ],
    ids=["deep", "bad-utf8", "huge-int"],
)
def test_unparseable_bodies_answer_422_like_malformed_json(
    server: LiveServer, module_db_url: str, body: bytes
) -> None:
    with stores_nothing(module_db_url):
        malformed = post_raw(server, "/api/jobs", b"{not json", JSON)
        response = post_raw(server, "/api/jobs", body, JSON)
    assert malformed.status_code == 422
    assert response.status_code == 422, response.text


def test_oversize_bodies_answer_413_at_the_exact_limit(
    server: LiveServer, module_db_url: str
) -> None:
    def body_of(size: int) -> bytes:
        head, tail = b'{"name":"', b'"}'
        return head + b"x" * (size - len(head) - len(tail)) + tail

    with stores_nothing(module_db_url):
        at_limit = post_raw(server, "/api/workspaces", body_of(BODY_LIMIT), JSON)
        over = post_raw(server, "/api/workspaces", body_of(BODY_LIMIT + 1), JSON)
        with server.client() as http:
            chunked_form = http.post(
                "/ui/workspaces",
                content=(b"name=" + b"x" * 65536 for _ in range(48)),
                headers=FORM,
            )
    assert "at most 64 characters" in refused_with_detail(at_limit, 422)  # read, then refused
    assert f"larger than {BODY_LIMIT}" in refused_with_detail(over, 413)
    assert chunked_form.status_code == 413
    # A Content-Length that claims more than the limit is refused before any body is read.
    assert raw_status(server, "POST", "/api/workspaces", BODY_LIMIT * 10, b'{"name":"ok"}') == 413
    assert_healthy(server)


# -- numbers that are not numbers ------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [b"Infinity", b"-Infinity", b"NaN", b"1e400", b"[1, NaN]", b'{"workspaceId": -Infinity}'],
)
def test_non_finite_payloads_are_422(
    server: LiveServer, module_db_url: str, payload: bytes
) -> None:
    body = b'{"type":"workspace_init","payload":' + payload + b"}"
    with stores_nothing(module_db_url):
        response = post_raw(server, "/api/jobs", body, JSON)
    refused_with_detail(response, 422)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/jobs", b'{"type":"workspace_init","priority":NaN}'),
        ("/api/jobs", b'{"type":"workspace_init","max_attempts":Infinity}'),
        ("/api/jobs", b'{"type":"workspace_init","run_at":-Infinity}'),
        ("/api/jobs", b'{"type":"workspace_init","priority":1e400}'),
        ("/api/workspaces", b'{"name":NaN}'),
    ],
    ids=["priority-nan", "attempts-inf", "run-at-neg-inf", "priority-1e400", "name-nan"],
)
def test_non_finite_numbers_in_typed_fields_are_422(
    server: LiveServer, module_db_url: str, path: str, body: bytes
) -> None:
    with stores_nothing(module_db_url):
        response = post_raw(server, path, body, JSON)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "payload",
    [b'"\\ud800"', b'{"workspaceId":"\\udfff"}', b'{"workspaceId":"a\\u0000"}'],
    ids=["lone-high", "lone-low", "nul"],
)
def test_unstorable_text_in_a_payload_is_422(
    server: LiveServer, module_db_url: str, payload: bytes
) -> None:
    body = b'{"type":"workspace_init","payload":' + payload + b"}"
    with stores_nothing(module_db_url):
        response = post_raw(server, "/api/jobs", body, JSON)
    refused_with_detail(response, 422)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/jobs", b'{"type":"\\ud800"}'),
        ("/api/workspaces", b'{"name":"\\udc00"}'),
        ("/api/workspaces", b'{"name":"ok","template":"\\ud800"}'),
    ],
    ids=["job-type", "workspace-name", "template"],
)
def test_lone_surrogates_in_typed_fields_are_422(
    server: LiveServer, module_db_url: str, path: str, body: bytes
) -> None:
    with stores_nothing(module_db_url):
        response = post_raw(server, path, body, JSON)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("path", ["/api/jobs", "/api/workspaces"])
@pytest.mark.parametrize("limit", [10**12, 10**30, -1, 0, "1e3", "", "NaN", "0x10", "\u0665"])
def test_limits_out_of_range_or_not_integers_are_422(
    server: LiveServer, path: str, limit: object
) -> None:
    with server.client() as http:
        refused_with_detail(http.get(path, params={"limit": str(limit)}), 422)


# -- run_at ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "run_at",
    [
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "+275760-09-13T00:00:00Z",
        "-0001-01-01T00:00:00Z",
        "2030-01-01T00:00:00",  # naive: which zone?
        "2024-02-30T00:00:00Z",
        "1e20",
        1e20,
        10**20,
        "2030-01-01T00:00:00+24:00",
        "yesterday",
    ],
)
def test_run_at_outside_the_bounds_or_unreadable_is_422(
    server: LiveServer, module_db_url: str, run_at: object
) -> None:
    with stores_nothing(module_db_url), server.client() as http:
        response = http.post(
            "/api/jobs",
            json={"type": "workspace_init", "payload": {"workspaceId": "w"}, "run_at": run_at},
        )
    refused_with_detail(response, 422)


@pytest.mark.parametrize(
    ("run_at", "stored"),
    [
        ("-1", "1969-12-31T23:59:59Z"),  # a number is Unix time: one second before 1970
        (-1, "1969-12-31T23:59:59Z"),
        (0, "1970-01-01T00:00:00Z"),
        # Over 2e10 pydantic reads milliseconds: year 9999 in *seconds* becomes 1978.
        (253402300800, "1978-01-11T21:31:40.800000Z"),
        ("1970-01-01T00:00:00+15:59", "1969-12-31T08:01:00Z"),
    ],
)
def test_past_run_at_within_100_years_is_accepted_and_due_at_once(
    server: LiveServer, module_db_url: str, run_at: object, stored: str
) -> None:
    """Documented behaviour: the bound is 100 years either side of now, so these pass and
    mean "due now". They are the only attacks in this file that store a row."""
    before = entity_counts(module_db_url)["jobyard_jobs"]
    with server.client() as http:
        response = http.post(
            "/api/jobs",
            json={"type": "workspace_init", "payload": {"workspaceId": "w"}, "run_at": run_at},
        )
    assert response.status_code == 202, response.text
    assert response.json()["run_at"].replace(".000000Z", "Z") == stored.replace(".000000Z", "Z")
    assert entity_counts(module_db_url)["jobyard_jobs"] == before + 1


def test_run_at_with_any_valid_utc_offset_is_the_same_instant(
    server: LiveServer, backend: str, request: pytest.FixtureRequest
) -> None:
    """ISO 8601 and Python allow offsets up to +-23:59; PostgreSQL's timestamptz input only
    up to +-15:59, so the queue must hand the store UTC."""
    response = send(
        server,
        "POST",
        "/api/jobs",
        json={
            "type": "workspace_init",
            "payload": {"workspaceId": "w"},
            "run_at": "2030-01-01T00:00:00+23:59",
        },
    )
    assert response.status_code == 202, response.text
    assert response.json()["run_at"] == "2029-12-31T00:01:00Z"


# -- templates and workspace names -----------------------------------------------------------
ESCAPING_TEMPLATES: Final = [
    "../outside",
    "../../etc/passwd",
    "a/../../outside",
    "./../outside",
    "..",
    "/etc",
    "//etc",
    "/",
    "..\\outside",
    "\\..\\outside",
    "a\\..\\..\\outside",
    "C:/Windows",
    "c:outside",
    "x/",
    "a//b",
    "\x00",
    "ok\x00/../../outside",
    "x" * 256,
    "",
]


@pytest.mark.parametrize("template", ESCAPING_TEMPLATES)
def test_template_paths_that_could_escape_are_refused(
    server: LiveServer, module_db_url: str, template: str
) -> None:
    with stores_nothing(module_db_url), server.client() as http:
        response = http.post("/api/workspaces", json={"name": "tpl", "template": template})
    refused_with_detail(response, 422)


def test_symlinks_in_the_templates_folder_that_lead_outside_are_refused(
    server: LiveServer, module_db_url: str, tmp_path: Path
) -> None:
    templates = server.config.templates_path
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours\n")
    (templates / "escape-link").symlink_to(outside, target_is_directory=True)
    (templates / "parent-link").symlink_to(templates.parent, target_is_directory=True)
    (templates / "nest").mkdir()
    (templates / "nest" / "inner").symlink_to(outside, target_is_directory=True)
    (templates / "file-link").symlink_to(outside / "secret.txt")
    with stores_nothing(module_db_url), server.client() as http:
        for template in ("escape-link", "parent-link", "nest/inner", "file-link", "nest/inner/x"):
            response = http.post("/api/workspaces", json={"name": "ln", "template": template})
            assert "outside the templates folder" in refused_with_detail(response, 422), template


def test_dashboard_form_refuses_an_encoded_escape(server: LiveServer, module_db_url: str) -> None:
    """The form body is URL-encoded: `..%2Foutside` arrives as `../outside` and is refused."""
    with stores_nothing(module_db_url):
        response = post_raw(server, "/ui/workspaces", b"name=ok&template=..%2Foutside", FORM)
    assert response.status_code == 422
    assert "Not created" in response.text


@pytest.mark.parametrize(
    "template",
    [
        "%2e%2e/outside",
        "%2e%2e%2foutside",
        "..%2foutside",
        "~/outside",
        "$HOME/outside",
        "\uff0e\uff0e/outside",  # fullwidth full stops, not dots
    ],
)
def test_template_names_are_taken_literally_never_decoded_or_expanded(
    server: LiveServer, module_db_url: str, monkeypatch: pytest.MonkeyPatch, template: str
) -> None:
    """Refusing these would be fine too; accepting them is safe only because nothing decodes
    `%2e`, expands `~` or `$HOME`, or folds fullwidth dots. If anything did, the workspace
    would be built from data/outside (next to the templates folder), which is HOME here too."""
    data = server.config.data_dir
    outside = data / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "marker.txt").write_text("outside\n")
    monkeypatch.setenv("HOME", str(data))
    before = entity_counts(module_db_url)
    with server.client() as http:
        response = http.post("/api/workspaces", json={"name": "literal", "template": template})
        if response.status_code == 422:
            assert entity_counts(module_db_url) == before
            return
        assert response.status_code == 202, response.text
        workspace = response.json()["workspace"]
        assert workspace["template"] == template  # stored verbatim
        done = eventually(lambda: settled(http, f"/api/workspaces/{workspace['id']}"), "init")
    assert done["status"] == "failed", done
    assert "does not exist" in done["error"]
    assert not (data / "workspaces" / workspace["id"]).exists()
    assert not list((data / "workspaces").rglob("marker.txt"))


@pytest.mark.parametrize(
    "name",
    [
        "..",
        ".",
        ".hidden",
        "-rf",
        "a/b",
        "../x",
        "a\\b",
        "a:b",
        "\x00",
        "a\x00",
        "x" * 65,
        "\U0001f600",
        "caf\u00e9",
        "",
        " ",
        "a b",
        "a\n",
        "a\t",
    ],
)
def test_workspace_names_that_are_not_safe_directory_names_are_422(
    server: LiveServer, module_db_url: str, name: str
) -> None:
    with stores_nothing(module_db_url), server.client() as http:
        response = http.post("/api/workspaces", json={"name": name})
    refused_with_detail(response, 422)


def test_device_names_are_accepted_but_never_become_paths(server: LiveServer) -> None:
    """`con`, `NUL`, `aux`, `com1`, `a.` are trouble as Windows file names, and the name
    pattern lets them through. That is harmless because a workspace lives in a folder named
    by its id, never by its name."""
    names = ["con", "NUL", "aux", "com1", "lpt1", "a."]
    root = server.config.data_dir / "workspaces"
    with server.client() as http:
        ids = []
        for name in names:
            response = http.post("/api/workspaces", json={"name": name})
            assert response.status_code == 202, (name, response.text)
            ids.append(response.json()["workspace"]["id"])
        for workspace_id in ids:
            path = f"/api/workspaces/{workspace_id}"
            done = eventually(functools.partial(settled, http, path), "init")
            assert done["status"] == "ready", done
    made = {p.name for p in root.iterdir()}
    assert set(ids) <= made
    assert not made & set(names)


def test_json_body_with_a_bom_or_in_utf16_is_read_as_json(server: LiveServer) -> None:
    """Not an attack, a pin: Python's JSON reader detects UTF-16 and skips a UTF-8 BOM, so
    these bodies are read like UTF-8 ones, whatever charset the header claims."""
    for name, encoded in (
        ("bom", b"\xef\xbb\xbf" + json.dumps({"name": "bom"}).encode("utf-8")),
        ("utf16", json.dumps({"name": "utf16"}).encode("utf-16")),
    ):
        response = post_raw(server, "/api/workspaces", encoded, JSON)
        assert response.status_code == 202, response.text
        assert response.json()["workspace"]["name"] == name
