"""The seam through which an application adds to the engine's HTTP service, on a demo extension
(its templates are in tests/demo_panel/): its routes sit behind the engine's door, its panel is
drawn by the engine's rules, and its forms are served by the engine.

The workspace platform is the real extension; its routes and panel are tested through the API,
dashboard, browser and hostile suites, on the app `jobyard serve` builds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from jobyard import Config
from jobyard.api import Extension, FormRefused, Panel, ServerSettings, create_app
from jobyard.runtime import Runtime, build_runtime

TOKEN = "extension-test-token-0123456789"
BASE = "http://127.0.0.1"
CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
JSON = {"content-type": "application/json"}
MARKUP = "<script>alert(1)</script>"


class NoteIn(BaseModel):
    text: str


@dataclass
class Notes:
    """A demo application: notes, kept in memory, shown and added through the extension."""

    id: str
    action: str
    notes: list[str] = field(default_factory=list)
    drawn: int = 0

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.post("/notes", status_code=201)
        async def add(body: NoteIn) -> dict[str, int]:
            self.notes.append(body.text)
            return {"count": len(self.notes)}

        @router.get("/status")  # the engine's /api/status answers instead
        async def shadowed() -> dict[str, str]:
            return {"from": "extension"}

        return router

    async def load_top(self) -> Mapping[str, Any]:
        return {"id": self.id, "action": self.action}

    async def load_live(self) -> Mapping[str, Any]:
        self.drawn += 1
        return {"id": self.id, "notes": list(self.notes), "drawn": self.drawn}

    async def add_from_form(self, fields: Mapping[str, str]) -> None:
        text = fields.get("text", "")
        if not text.strip():
            raise FormRefused("a note needs some text", {"text": text})
        if text == "refuse":
            raise FormRefused(f"not this one: {MARKUP}", {"text": MARKUP})
        self.notes.append(text)

    def extension(self, name: str) -> Extension:
        return Extension(
            name,
            routers=[self.router()],
            panel=Panel(
                package="tests.demo_panel",
                top="top.html",
                live="live.html",
                load_top=self.load_top,
                load_live=self.load_live,
                forms={self.action: self.add_from_form},
            ),
        )


@pytest.fixture
async def runtime(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = build_runtime(Config(database_url=sqlite_url, data_dir=tmp_path / "data"))
    await rt.migrate()
    yield rt
    await rt.close()


def client(rt: Runtime, extensions: list[Extension], token: str | None) -> httpx.AsyncClient:
    app = create_app(rt, ServerSettings(api_token=token), run_worker=False, extensions=extensions)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_an_extensions_routes_are_behind_the_engines_door(
    runtime: Runtime, token: str | None
) -> None:
    notes = Notes("notes", "/ui/notes")
    authorized = {"Authorization": f"Bearer {token}"} if token else {}
    async with client(runtime, [notes.extension("notes")], token) as http:
        added = await http.post("/api/notes", json={"text": "hi"}, headers=authorized)
        assert (added.status_code, added.json()) == (201, {"count": 1})
        if token is not None:
            anonymous = await http.post("/api/notes", json={"text": "no"})
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"] == "Bearer"
        cross = await http.post(
            "/api/notes", json={"text": "csrf"}, headers={**authorized, **CROSS_SITE}
        )
        assert (cross.status_code, cross.json()) == (403, {"detail": "cross-site request refused"})
        big = await http.post(
            "/api/notes",
            content=b'{"text": "' + b"x" * (3 * 1024 * 1024) + b'"}',
            headers={**authorized, **JSON},
        )
        assert big.status_code == 413
        malformed = await http.post(
            "/api/notes", content=b"{not json", headers={**authorized, **JSON}
        )
        assert malformed.status_code == 422
        assert malformed.json()["detail"]
        # Where an extension's path overlaps the engine's, the engine's route answers.
        status = await http.get("/api/status", headers=authorized)
        assert "leader" in status.json()
        assert "/api/notes" in (await http.get("/openapi.json")).json()["paths"]
    assert notes.notes == ["hi"]


async def test_panels_are_drawn_from_their_own_templates_above_and_inside_the_live_part(
    runtime: Runtime,
) -> None:
    notes, more = Notes("notes", "/ui/notes", [MARKUP]), Notes("more", "/ui/more", ["second"])
    extensions = [notes.extension("notes"), more.extension("more")]
    async with client(runtime, extensions, None) as http:
        page = (await http.get("/")).text
        live = (await http.get("/ui/live")).text
    above, _, inside = page.partition('<div id="live"')
    # Each panel's top is above the live part, in the order of the extensions; its live part
    # is inside it, after the engine's sections. Both use templates named alike, apart.
    assert above.index('id="notes-form"') < above.index('id="more-form"')
    assert 'action="/ui/more"' in above
    assert inside.index('id="jobs"') < inside.index('id="notes"') < inside.index('id="more"')
    assert "<li>second</li>" in inside
    # The refresh draws the live parts alone, loading them again; the tops stay put.
    assert 'id="notes"' in live
    assert 'id="more"' in live
    assert "-form" not in live
    assert (notes.drawn, more.drawn) == (2, 2)
    # A panel's values are escaped like the engine's, and it sees the page's helpers.
    for html in (page, live):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert MARKUP not in html
        assert '<p class="age">—</p>' in html


async def test_a_panels_form_is_served_by_the_engine(runtime: Runtime) -> None:
    notes = Notes("notes", "/ui/notes")
    async with client(runtime, [notes.extension("notes")], None) as http:
        done = await http.post("/ui/notes", data={"text": "from the form"})
        assert (done.status_code, done.headers["location"]) == (303, "/")
        refused = await http.post("/ui/notes", data={"text": "  "})
        assert refused.status_code == 422
        assert '<p class="form-error" role="alert">a note needs some text</p>' in refused.text
        assert 'value="  "' in refused.text  # as typed, to be corrected
        assert 'id="live"' in refused.text  # the whole page, drawn again
        escaped = await http.post("/ui/notes", data={"text": "refuse"})
        assert escaped.status_code == 422
        assert MARKUP not in escaped.text
        assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in escaped.text
        not_a_form = await http.post("/ui/notes", json={"text": "json"})
        assert not_a_form.status_code == 415
        cross = await http.post("/ui/notes", data={"text": "csrf"}, headers=CROSS_SITE)
        assert cross.status_code == 403
        paths = (await http.get("/openapi.json")).json()["paths"]
        assert "/ui/notes" not in paths
    assert notes.notes == ["from the form"]


async def test_a_panels_form_needs_the_token_when_the_server_has_one(runtime: Runtime) -> None:
    notes = Notes("notes", "/ui/notes")
    async with client(runtime, [notes.extension("notes")], TOKEN) as http:
        anonymous = await http.post("/ui/notes", data={"text": "no"})
        assert anonymous.status_code == 401
        signed_in = await http.post("/ui/login", data={"token": TOKEN})
        assert signed_in.status_code == 303
        assert (await http.post("/ui/notes", data={"text": "yes"})).status_code == 303
    assert notes.notes == ["yes"]


def test_extensions_that_cannot_be_told_apart_are_refused(tmp_path: Path) -> None:
    rt = build_runtime(Config(database_url=f"sqlite:///{tmp_path / 'j.db'}", data_dir=tmp_path))
    a, b = Notes("a", "/ui/a"), Notes("b", "/ui/a")
    with pytest.raises(ValueError, match="share a name"):
        create_app(rt, ServerSettings(), extensions=[a.extension("same"), b.extension("same")])
    with pytest.raises(ValueError, match="same path"):
        create_app(rt, ServerSettings(), extensions=[a.extension("a"), b.extension("b")])
    with pytest.raises(ValueError, match="extension name"):
        Extension("../templates")
    with pytest.raises(ValueError, match="posts under /ui/"):
        Panel(package="tests.demo_panel", forms={"/api/notes": a.add_from_form})
