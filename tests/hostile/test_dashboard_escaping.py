"""The dashboard shows text that users and their code control (job errors, templates, the
errors that quote them, node names, the values of a refused form) as text: escaped, on the
full page and on the live fragment its script swaps in. Over real HTTP, on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import httpx
import pytest
from markupsafe import escape

from tests.hostile.helpers import eventually, settled
from tests.live_server import LiveServer, live_server

JOB_MARKUP: Final = "<script>alert(101)</script>"
TEMPLATE_MARKUP: Final = '"><img src=x onerror=alert(102)>'
NODE_MARKUP: Final = '"><script>alert(103)</script><b x="'
FORM_MARKUP: Final = '"><img src=x onerror=alert(104)>'
PAGES: Final = ("/", "/ui/live")


@pytest.fixture(scope="module")
def server(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The suite's server, with a node whose configured id is markup too."""
    data = tmp_path_factory.mktemp("escaping-data") / "data"
    with live_server(module_db_url, data, node_id=NODE_MARKUP) as live:
        live.config.templates_path.mkdir(parents=True, exist_ok=True)
        yield live


def job_in(http: httpx.Client, job_id: int, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/api/jobs/{job_id}").json()
        return job if job["status"] == status else None

    return eventually(check, f"job {job_id} to be {status}")


def assert_shown_as_text(page: str, markup: str, where: str) -> None:
    assert str(escape(markup)) in page, f"{where}: escaped form missing"
    assert markup not in page, f"{where}: raw markup served"


def pages(http: httpx.Client) -> dict[str, str]:
    served = {}
    for path in PAGES:
        response = http.get(path)
        assert response.status_code == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        served[path] = response.text
    return served


def test_a_job_error_with_a_script_tag_renders_as_text(server: LiveServer) -> None:
    with server.client() as http:
        created = http.post(
            "/api/jobs", json={"type": "workspace_init", "payload": {"workspaceId": JOB_MARKUP}}
        )
        assert created.status_code == 202, created.text
        failed = job_in(http, created.json()["id"], "failed")
        assert JOB_MARKUP in failed["error"]  # the executor quoted the payload into its error
        for path, page in pages(http).items():
            assert f'data-job="{failed["id"]}"' in page, path
            assert_shown_as_text(page, JOB_MARKUP, path)


def test_a_template_and_the_errors_quoting_it_render_as_text(server: LiveServer) -> None:
    with server.client() as http:
        created = http.post("/api/workspaces", json={"name": "xss", "template": TEMPLATE_MARKUP})
        assert created.status_code == 202, created.text
        workspace = created.json()["workspace"]
        session = http.post(f"/api/workspaces/{workspace['id']}/sessions").json()["session"]
        ws = eventually(lambda: settled(http, f"/api/workspaces/{workspace['id']}"), "workspace")
        se = eventually(lambda: settled(http, f"/api/sessions/{session['id']}"), "session")
        assert ws["status"] == se["status"] == "failed"
        assert TEMPLATE_MARKUP in ws["error"]
        assert TEMPLATE_MARKUP in se["error"]  # "workspace ... failed: <its error>"
        for path, page in pages(http).items():
            assert f'data-id="{workspace["id"]}"' in page, path
            assert f'data-id="{session["id"]}"' in page, path
            assert_shown_as_text(page, TEMPLATE_MARKUP, path)


def test_a_node_id_with_markup_renders_as_text(server: LiveServer) -> None:
    with server.client() as http:
        eventually(lambda: http.get("/api/status").json()["leader"], "a leader")
        for path, page in pages(http).items():
            assert_shown_as_text(page, NODE_MARKUP, path)
            assert f'data-node="{escape(NODE_MARKUP)}"' in page, path


def test_a_refused_form_echoes_its_values_as_text(server: LiveServer) -> None:
    with server.client() as http:
        before = len(http.get("/api/workspaces", params={"limit": 500}).json())
        response = http.post("/ui/workspaces", data={"name": FORM_MARKUP, "template": FORM_MARKUP})
        assert response.status_code == 422
        assert "Not created" in response.text
        # In the value="..." attributes and in the error message, never as a tag.
        assert f'value="{escape(FORM_MARKUP)}"' in response.text
        assert_shown_as_text(response.text, FORM_MARKUP, "refused form")
        assert len(http.get("/api/workspaces", params={"limit": 500}).json()) == before


def test_the_page_escapes_quotes_in_attributes(server: LiveServer) -> None:
    """A positive control for the checks above: markupsafe's escape is what the page uses,
    so the escaped forms asserted there are the ones a browser reads back as text."""
    assert str(escape(TEMPLATE_MARKUP)) == "&#34;&gt;&lt;img src=x onerror=alert(102)&gt;"
    assert str(escape(JOB_MARKUP)) == "&lt;script&gt;alert(101)&lt;/script&gt;"
