"""What the dashboard page shows, and how it is drawn: the engine's snapshot of the cluster,
the extensions' panels, and the one Jinja environment of an app.

The routes that serve the page, and decide who may see it or act on it, are in
`jobyard.api.dashboard`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fastapi.responses import HTMLResponse
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    PackageLoader,
    PrefixLoader,
    StrictUndefined,
)

from jobyard.api.extensions import Extension, FormHandler, FormRefused
from jobyard.model import Job, JobStatus
from jobyard.runtime import Runtime
from jobyard.status import ClusterStatus
from jobyard.store.records import JobFilter

__all__ = [
    "Pages",
    "PanelView",
    "Refusal",
    "Snapshot",
    "Sparkline",
    "ages",
    "snapshot",
    "sparkline",
]

THROUGHPUT_MINUTES: Final = 30
RECENT_JOBS: Final = 20
RECENT_FAILURES: Final = 10
ERROR_CHARS: Final = 600

# The page loads only its own script and stylesheet, so an injected tag would not run even if
# escaping ever failed; frames and foreign form targets are refused as well.
_SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not "no-referrer": with it, browsers send `Origin: null` on form posts, which
    # the cross-site check must refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# -- what the page shows ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sparkline:
    """Jobs finished per minute, oldest first; the last bucket is the current minute.

    The SVG coordinates are computed here, as plain numbers, so the template only places them.
    """

    counts: tuple[int, ...]
    width: int = 300
    height: int = 48
    pad: int = 3

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)

    @property
    def last(self) -> int:
        return self.counts[-1] if self.counts else 0

    def _xy(self) -> list[tuple[float, float]]:
        n = len(self.counts)
        step = self.width / (n - 1) if n > 1 else 0.0
        span = self.height - 2 * self.pad
        peak = self.peak
        bottom = self.height - self.pad
        return [
            (round(i * step, 1), round(bottom - (c / peak if peak else 0.0) * span, 1))
            for i, c in enumerate(self.counts)
        ]

    @property
    def points(self) -> str:
        """The polyline's `points` attribute."""
        return " ".join(f"{x:g},{y:g}" for x, y in self._xy())

    @property
    def area(self) -> str:
        """The polygon under the line, closed along the bottom edge."""
        xy = self._xy()
        if not xy:
            return ""
        bottom = self.height - self.pad
        closed = [*xy, (xy[-1][0], bottom), (xy[0][0], bottom)]
        return " ".join(f"{x:g},{y:g}" for x, y in closed)


def sparkline(
    rows: Sequence[tuple[datetime, int]], now: datetime, minutes: int = THROUGHPUT_MINUTES
) -> Sparkline:
    """Bucket `finished_per_minute` rows into the last `minutes` minutes ending with `now`'s.

    Minutes with nothing finished have no row, so they are filled with zeros here; rows outside
    the window are ignored.
    """
    this_minute = math.floor(now.timestamp() / 60) * 60
    first = this_minute - (minutes - 1) * 60
    by_minute: dict[int, int] = {}
    for minute, count in rows:
        key = math.floor(minute.timestamp() / 60) * 60
        by_minute[key] = by_minute.get(key, 0) + count
    return Sparkline(tuple(by_minute.get(first + i * 60, 0) for i in range(minutes)))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the live part of the page shows, read in one go."""

    now: datetime
    status: ClusterStatus
    this_node: str
    failures: list[Job]
    jobs: list[Job]
    throughput: Sparkline
    states: tuple[JobStatus, ...] = field(default=tuple(JobStatus))


async def snapshot(rt: Runtime) -> Snapshot:
    """Read the cluster, the recent jobs and the throughput, through the admin door.

    The database clock is the reference, so ages and the sparkline agree with `finished_at`
    even when this host's clock drifts.
    """
    admin = rt.admin
    now = await admin.now()
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=THROUGHPUT_MINUTES - 1)
    return Snapshot(
        now=now,
        status=await admin.cluster_status(),
        this_node=rt.dispatcher.node_id,
        failures=await admin.list_jobs(JobFilter(status=JobStatus.FAILED, limit=RECENT_FAILURES)),
        jobs=await admin.list_jobs(JobFilter(limit=RECENT_JOBS)),
        throughput=sparkline(await admin.finished_per_minute(since), now),
    )


def ages(now: datetime) -> Callable[[datetime | None], str]:
    """A short age ("4s ago", "3m ago") relative to the snapshot's database time."""

    def ago(moment: datetime | None) -> str:
        if moment is None:
            return "—"
        seconds = (now - moment).total_seconds()
        if seconds < 0:
            return f"in {_span(-seconds)}"
        return f"{_span(seconds)} ago"

    return ago


def _span(seconds: float) -> str:
    if seconds < 1:
        return "<1s"
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clip(text: str | None, limit: int = ERROR_CHARS) -> str:
    """Long tracebacks would push everything else off the page; the API has the full text."""
    if text is None:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- how the page is drawn: the engine's templates and the extensions' panels ------------------
@dataclass(frozen=True, slots=True)
class PanelView:
    """One panel's template and what it shows, for one drawing of the page."""

    template: str
    data: Mapping[str, Any]
    form_error: str | None = None
    form_values: Mapping[str, str] = field(default_factory=dict)


# Which panel's form was refused, and why: drawn under that panel's form.
Refusal = tuple[str, FormRefused]


class Pages:
    """The dashboard of one app: its templates and the panels of its extensions.

    One Jinja environment per app, loading the engine's templates by their own names and each
    panel's from its package under the extension's name (`workspaces/live.html`), so a panel
    can neither replace an engine template nor another panel's. autoescape=True (not
    select_autoescape): every template is HTML, so every `{{ }}` is escaped whatever the file is
    called. StrictUndefined turns a typo into an error, not a blank.
    """

    def __init__(self, extensions: Sequence[Extension] = ()) -> None:
        names = [e.name for e in extensions]
        if len(set(names)) != len(names):
            raise ValueError(f"two extensions share a name: {names}")
        self.panels = [(e.name, e.panel) for e in extensions if e.panel is not None]
        paths = [path for _, panel in self.panels for path in panel.forms]
        if len(set(paths)) != len(paths):
            raise ValueError(f"two panels post forms to the same path: {sorted(paths)}")
        own: dict[str, BaseLoader] = {
            name: PackageLoader(panel.package, "templates") for name, panel in self.panels
        }
        self.env = Environment(
            loader=ChoiceLoader([PackageLoader("jobyard.api", "templates"), PrefixLoader(own)]),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["iso"] = _iso
        self.env.filters["clip"] = _clip

    def forms(self) -> list[tuple[str, str, FormHandler]]:
        """(extension name, path, handler) of every panel's form."""
        return [
            (name, p, handle) for name, panel in self.panels for p, handle in panel.forms.items()
        ]

    async def tops(self, refusal: Refusal | None = None) -> list[PanelView]:
        """The panels' parts above the live one, each with its loader's data, and the refused
        form's reason and values under the panel whose form it was."""
        views = []
        for name, panel in self.panels:
            if panel.top is None:
                continue
            refused = refusal[1] if refusal is not None and refusal[0] == name else None
            views.append(
                PanelView(
                    f"{name}/{panel.top}",
                    await panel.load_top(),
                    form_error=refused.message if refused else None,
                    form_values=refused.values if refused else {},
                )
            )
        return views

    async def lives(self) -> list[PanelView]:
        """The panels' parts inside the live one, each with its loader's data."""
        return [
            PanelView(f"{name}/{panel.live}", await panel.load_live())
            for name, panel in self.panels
            if panel.live is not None
        ]

    def render(self, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=code, headers=dict(_SECURITY_HEADERS))
