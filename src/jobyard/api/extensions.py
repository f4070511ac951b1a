"""What an application built on the engine adds to the engine's HTTP service.

`create_app(runtime, settings, extensions=[...])` serves the engine's API and dashboard and, for
each `Extension`, its JSON routes and its dashboard panel. The engine knows nothing of what an
extension does; it guarantees how its parts are served:

- **Routers** are mounted under `/api` behind the same door as the engine's routes: the bearer
  token when the server has one, the body limits, the cross-site guard, and the same JSON
  refusals. A router declares its paths without the `/api` prefix and without any of that. The
  engine's routes come first, so where a path overlaps one of theirs, the engine's answers.
- **A panel** is two templates on the dashboard: `top` above the live part (a form, say), drawn
  with the page, and `live` inside the live part, drawn again on every 2 s refresh. Each is fed
  by its own async loader, called for every drawing. The templates come from the panel's own
  package and are rendered as the engine's are: every value escaped, an undefined name an error.
- **A panel's forms** are POST routes under `/ui/` that the engine serves for it, after its own
  dashboard routes: who may act, reading the urlencoded form (415 for any other kind), the
  cross-site guard and the redirect back to the page (303) are the engine's. The handler gets
  the fields; to refuse them it raises `FormRefused`, and the page is drawn again (422) with the
  reason under the panel's form and the form filled in.

There is no startup hook: an application's tables belong to its runtime and its store, not to
a web front end. The app calls `runtime.migrate()` when it starts (`WorkspaceRuntime` migrates
the platform's line there), and a worker with no web front end gets the same tables, since the
stores also migrate on first use.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import APIRouter

__all__ = ["Extension", "FormHandler", "FormRefused", "Loader", "Panel"]

Loader = Callable[[], Awaitable[Mapping[str, Any]]]
"""Reads what a panel's template shows; its mapping is the template's `data`."""

FormHandler = Callable[[Mapping[str, str]], Awaitable[None]]
"""Acts on a posted form's fields (the first value of each, at most 16 fields; the engine
answers 400 to more); raises `FormRefused` to refuse."""

_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
FORMS_PREFIX: Final = "/ui/"


async def _nothing() -> Mapping[str, Any]:
    return {}


class FormRefused(Exception):
    """A panel's form handler refuses what was sent: nothing may have been stored. The page is
    drawn again with `message` under the form, and the form filled with `values`."""

    def __init__(self, message: str, values: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.values: Mapping[str, str] = dict(values or {})


@dataclass(frozen=True, slots=True)
class Panel:
    """An extension's part of the dashboard.

    `package` is an importable package whose `templates/` folder holds `top` and `live` (names
    within that folder). A template sees `data` (what its loader returned), `ago(moment)` (an
    age against the database clock, "4s ago"), and the filters `iso` (an exact UTC time) and
    `clip` (long text cut short); `top` also sees `form_error` (the reason of a refused form of
    this panel, or None) and `form_values` (what was typed, else empty). `forms` maps each
    form's path, under `/ui/`, to its handler.
    """

    package: str
    top: str | None = None
    live: str | None = None
    load_top: Loader = _nothing
    load_live: Loader = _nothing
    forms: Mapping[str, FormHandler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path in self.forms:
            if not path.startswith(FORMS_PREFIX) or len(path) == len(FORMS_PREFIX):
                raise ValueError(f"a panel's form posts under {FORMS_PREFIX}, not to {path!r}")


@dataclass(frozen=True, slots=True)
class Extension:
    """An application's routes and dashboard panel, for `create_app(..., extensions=[...])`.

    `name` (lowercase letters, digits and `_`) tells extensions apart and prefixes the panel's
    templates, so two panels may both have a `live.html`.
    """

    name: str
    routers: Sequence[APIRouter] = ()
    panel: Panel | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"extension name {self.name!r}: use lowercase letters, digits and '_', "
                "starting with a letter"
            )
