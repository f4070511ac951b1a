"""The library's boundaries, checked: the engine knows nothing of the workspace platform (the
HTTP service composes it in one function, the CLI in two modules), nothing above the store names
a database driver, and the front ends reach the store only through its doors (JobAdmin, the
Queue, the platform's own store).

The import rules are read from the source (every import statement, at any depth), so a lazy
import inside a function counts too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "jobyard"
DRIVERS = ("sqlite3", "psycopg", "psycopg_pool")
PLATFORM = "jobyard.workspaces"
# May import the platform: the platform itself, and exactly two modules of the CLI: the app,
# which adds the platform's command groups, and the service's composition (its runtime, limits
# and migrations). Every other CLI module sees only the engine.
PLATFORM_USERS = ("workspaces", "cli/commands", "cli/service")
# The engine's HTTP service knows the platform in one place only: `jobyard serve`'s composition,
# the function `serve` of this module, so an app built on the engine alone never loads it.
COMPOSITION = ("api/server.py", "serve")
# The store layers: the engine's, and the platform's persistence beside its SQL.
STORE_LAYERS = ("store", "workspaces/store")
# The command line: the engine's commands and the platform's.
CLI = ("cli", "workspaces/cli")
# Of those, the modules that may open or name the store: what an invocation opens, and the
# service's migrations. The others read and act through JobAdmin, the Queue and the platform's
# store; the store's value types (jobyard.store.records: JobFilter, ...) are fine anywhere.
STORE_OPENERS = ("cli/context", "cli/service")
STORE_DOORS_AROUND = ("jobyard.store", "jobyard.status.cluster_status", "jobyard.open_store")
# The front ends: the HTTP service (the engine's API and dashboard, the platform's routes and
# panel) and the command line. Outside the CLI's store openers, none reads a `.store`.
FRONT_ENDS = ("api", "workspaces/web", "cli", "workspaces/cli")

Found = Iterable[tuple[str, set[str]]]
Offenders = list[tuple[str, list[str]]]


def modules() -> list[tuple[str, set[str]]]:
    """(path relative to the package, every module it imports) for each module."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        found.append((path.relative_to(PACKAGE).as_posix(), imported))
    return found


def under(relative: str, folders: tuple[str, ...]) -> bool:
    return any(relative == f"{f}.py" or relative.startswith(f"{f}/") for f in folders)


def names_platform(module: str) -> bool:
    return module == "jobyard.workspaces" or module.startswith("jobyard.workspaces.")


def names_driver(module: str) -> bool:
    return module.split(".")[0] in DRIVERS


def goes_around_the_doors(module: str) -> bool:
    """`module` is the store itself (not its value types) or a read that bypasses JobAdmin."""
    if module == "jobyard.store.records" or module.startswith("jobyard.store.records."):
        return False
    return any(module == door or module.startswith(f"{door}.") for door in STORE_DOORS_AROUND)


def platform_offenders(found: Found) -> Offenders:
    """Modules that import the platform without being allowed to (`jobyard serve`'s
    composition is checked on its own: it may, inside one function)."""
    return [
        (relative, sorted(filter(names_platform, imported)))
        for relative, imported in found
        if not under(relative, PLATFORM_USERS)
        and relative != COMPOSITION[0]
        and any(map(names_platform, imported))
    ]


def platform_imports_outside(source: str, function: str) -> list[int]:
    """Lines of `source` that import the platform anywhere but inside `function`."""
    tree = ast.parse(source)
    inside = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name == function
        for node in ast.walk(fn)
    }
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and id(node) not in inside
        and any(names_platform(name) for name in imported_by(node))
    )


def imported_by(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module or ""]


def store_uses(source: str) -> list[str]:
    """Every `<something>.store` in `source`, as `line: code`: a front end reaching past the
    admin door (`rt.store.get_job(...)`, or `store = rt.store` and calls on that later)."""
    found = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr == "store"
    ]
    return [f"{n.lineno}: {ast.unparse(n)}" for n in sorted(found, key=lambda n: n.lineno)]


def front_end_modules() -> list[Path]:
    """The front ends' modules, but the CLI's store openers."""
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if under(p.relative_to(PACKAGE).as_posix(), FRONT_ENDS)
        and not under(p.relative_to(PACKAGE).as_posix(), STORE_OPENERS)
    )


def driver_offenders(found: Found) -> Offenders:
    """Modules above the store layers that import a database driver."""
    return [
        (relative, sorted(filter(names_driver, imported)))
        for relative, imported in found
        if not under(relative, STORE_LAYERS) and any(map(names_driver, imported))
    ]


def store_door_offenders(found: Found) -> Offenders:
    """Command-line modules that reach the store other than through its doors."""
    return [
        (relative, sorted(filter(goes_around_the_doors, imported)))
        for relative, imported in found
        if under(relative, CLI)
        and not under(relative, STORE_OPENERS)
        and any(map(goes_around_the_doors, imported))
    ]


def test_only_the_platform_and_what_composes_it_import_the_platform() -> None:
    assert platform_offenders(modules()) == []


def test_the_http_service_imports_the_platform_only_inside_serve() -> None:
    module, function = COMPOSITION
    source = (PACKAGE / module).read_text()
    assert platform_imports_outside(source, function) == []
    assert any(map(names_platform, dict(modules())[module]))  # it does compose it


def test_front_ends_reach_the_store_only_through_the_admin_door() -> None:
    """The API, the dashboard and the CLI read jobs and act on them through `JobAdmin` (and
    enqueue through `Queue`), so they cannot disagree on what a read or an action means. An
    attribute named `store` on anything is flagged: `rt.store.now()` as much as
    `store = rt.store` (the platform's store is `workspace_store`, its own door)."""
    offenders = {
        path.relative_to(PACKAGE).as_posix(): found
        for path in front_end_modules()
        if (found := store_uses(path.read_text()))
    }
    assert offenders == {}


def test_nothing_above_the_store_names_a_database_driver() -> None:
    assert driver_offenders(modules()) == []


def test_the_cli_reaches_the_store_only_through_admin_queue_and_the_platforms_store() -> None:
    assert store_door_offenders(modules()) == []


def test_the_rules_catch_what_they_forbid() -> None:
    """Each rule flags a module that breaks it, and only that module."""
    assert platform_offenders(
        [
            ("cli/jobs.py", {"jobyard.workspaces", "jobyard.workspaces.WORKSPACE_LIMITS"}),
            ("cli/context.py", {"jobyard.workspaces.runtime"}),
            ("dispatcher/attempt.py", {"jobyard.workspaces.store"}),
            ("cli/service.py", {"jobyard.workspaces.runtime"}),
            ("api/app.py", {"jobyard.workspaces.runtime"}),
        ]
    ) == [
        ("cli/jobs.py", ["jobyard.workspaces", "jobyard.workspaces.WORKSPACE_LIMITS"]),
        ("cli/context.py", ["jobyard.workspaces.runtime"]),
        ("dispatcher/attempt.py", ["jobyard.workspaces.store"]),
        ("api/app.py", ["jobyard.workspaces.runtime"]),
    ]
    top_level = (
        "from jobyard.workspaces.web import x\n\ndef serve():\n    import jobyard.workspaces\n"
    )
    assert platform_imports_outside(top_level, "serve") == [1]
    assert platform_imports_outside(top_level, "elsewhere") == [1, 4]
    bypass = "async def f(rt):\n    await rt.store.now()\n    store = rt.admin.store\n"
    assert store_uses(bypass) == ["2: rt.store", "3: rt.admin.store"]
    assert store_uses("async def f(rt):\n    await rt.admin.now()\n") == []
    assert driver_offenders(
        [("cli/context.py", {"psycopg.errors"}), ("store/sqlite/store.py", {"sqlite3"})]
    ) == [("cli/context.py", ["psycopg.errors"])]
    assert store_door_offenders(
        [
            ("cli/jobs.py", {"jobyard.store", "jobyard.store.open_store"}),
            ("cli/waiting.py", {"jobyard.status", "jobyard.status.cluster_status"}),
            ("workspaces/cli.py", {"jobyard.store.ports", "jobyard.store.ports.Store"}),
            ("cli/status.py", {"jobyard", "jobyard.open_store"}),
            ("cli/jobs.py", {"jobyard.store.records", "jobyard.store.records.JobFilter"}),
            ("cli/status.py", {"jobyard.status", "jobyard.status.ClusterStatus"}),
            ("cli/context.py", {"jobyard.store", "jobyard.store.open_store"}),
            ("api/routes.py", {"jobyard.store", "jobyard.store.open_store"}),
        ]
    ) == [
        ("cli/jobs.py", ["jobyard.store", "jobyard.store.open_store"]),
        ("cli/waiting.py", ["jobyard.status.cluster_status"]),
        ("workspaces/cli.py", ["jobyard.store.ports", "jobyard.store.ports.Store"]),
        ("cli/status.py", ["jobyard.open_store"]),
    ]


def test_the_rules_see_what_they_are_meant_to_see() -> None:
    """The checks above read the real sources: the store does import its drivers, the
    platform's composition does import the platform, and the CLI's context opens the store."""
    seen = dict(modules())
    assert "sqlite3" in seen["store/sqlite/store.py"]
    assert "psycopg" in seen["store/postgres/store.py"]
    assert any(map(names_platform, seen["workspaces/__init__.py"]))
    assert any(map(names_platform, seen["cli/commands.py"]))
    assert any(map(names_platform, seen["cli/service.py"]))
    assert any(map(goes_around_the_doors, seen["cli/context.py"]))
    assert "jobyard.cli.waiting" in seen["workspaces/cli.py"]
    checked = {p.relative_to(PACKAGE).as_posix() for p in front_end_modules()}
    assert {
        "api/routes.py",
        "api/pages.py",
        "workspaces/web/dashboard.py",
        "cli/jobs.py",
    } <= checked
    assert "cli/context.py" not in checked


@pytest.mark.parametrize("first", ["jobyard.workspaces.cli", "jobyard.cli"])
def test_the_cli_and_the_platforms_commands_import_in_either_order(first: str) -> None:
    """The platform's command groups are built from `jobyard.cli`'s modules, and the `jobyard`
    app adds them: neither import may be circular, whichever comes first."""
    code = (
        f"import json, {first}\n"
        "from jobyard.cli import app\n"
        "print(json.dumps(sorted(group.name for group in app.registered_groups)))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == ["jobs", "sessions", "workspaces"]


ENGINE_ONLY = textwrap.dedent(
    """
    import asyncio, json, sqlite3, sys
    from jobyard import Config, Dispatcher, JobAdmin, Limits, Queue, open_store

    async def main(url):
        store = open_store(url)
        queue = Queue(store)
        dispatcher = Dispatcher(Config(job_poll_interval=0.05), store, queue)
        done = asyncio.Event()

        async def email(job):
            done.set()

        dispatcher.register_executor("email", email)
        node = asyncio.create_task(dispatcher.start())
        await queue.enqueue("email", {"to": "ada@example.com"})
        await asyncio.wait_for(done.wait(), 10)
        status = await JobAdmin(store).cluster_status()
        await dispatcher.stop()
        await node
        await store.close()
        return {
            "types": [t.type for t in status.types],
            "limits": dict(Limits().limits),
            "declared": sorted(queue.job_types),
            "platform_modules": [m for m in sys.modules if m.startswith("jobyard.workspaces")],
        }

    print(json.dumps(asyncio.run(main(sys.argv[1]))))
    """
)


def table_names(url: str) -> set[str]:
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            conn.close()
        return {r[0] for r in rows}
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
    return {r[0] for r in rows}


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: nothing migrated yet (not the conformance template)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'engine.db'}"
    return str(request.getfixturevalue("empty_pg_url"))


def test_engine_only_use_creates_no_workspace_table_lists_no_workspace_type(
    fresh_url: str,
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", ENGINE_ONLY, fresh_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen == {"types": ["email"], "limits": {}, "declared": ["email"], "platform_modules": []}
    tables = table_names(fresh_url)
    assert "jobyard_jobs" in tables
    assert not {t for t in tables if "workspace" in t or "session" in t}


ENGINE_APP = textwrap.dedent(
    """
    import asyncio, json, sys
    import httpx
    from jobyard import Config
    from jobyard.api import ServerSettings, create_app
    from jobyard.runtime import build_runtime

    async def main(url, data_dir):
        config = Config(database_url=url, data_dir=data_dir, job_poll_interval=0.05)
        runtime = build_runtime(config)
        done = asyncio.Event()

        async def email(job):
            done.set()

        runtime.dispatcher.register_executor("email", email)
        app = create_app(runtime, ServerSettings())
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),  # migrates and runs the worker, as uvicorn would
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http,
        ):
            job = await http.post("/api/jobs", json={"type": "email", "payload": {}})
            await asyncio.wait_for(done.wait(), 10)
            page = await http.get("/")
            live = await http.get("/ui/live")
            answers = {
                "POST /api/jobs": job.status_code,
                "GET /": page.status_code,
                "GET /ui/live": live.status_code,
                "GET /healthz": (await http.get("/healthz")).status_code,
                "GET /metrics": (await http.get("/metrics")).status_code,
                "GET /api/workspaces": (await http.get("/api/workspaces")).status_code,
                "GET /api/sessions/se_1": (await http.get("/api/sessions/se_1")).status_code,
                "POST /ui/workspaces": (
                    await http.post("/ui/workspaces", data={"name": "x"})
                ).status_code,
            }
            paths = sorted((await http.get("/openapi.json")).json()["paths"])
        ids = ("cluster", "jobs", "workspaces", "sessions", "new-workspace")
        return {
            "answers": answers,
            "sections": [i for i in ids if f'id="{i}"' in page.text + live.text],
            "paths": paths,
            "platform_modules": [m for m in sys.modules if m.startswith("jobyard.workspaces")],
        }

    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
    """
)


def test_an_app_on_the_engine_alone_serves_no_workspace_route_panel_or_table(
    fresh_url: str, tmp_path: Path
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", ENGINE_APP, fresh_url, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["answers"] == {
        "POST /api/jobs": 202,
        "GET /": 200,
        "GET /ui/live": 200,
        "GET /healthz": 200,
        "GET /metrics": 200,
        "GET /api/workspaces": 404,
        "GET /api/sessions/se_1": 404,
        "POST /ui/workspaces": 404,
    }
    assert seen["sections"] == ["cluster", "jobs"]
    assert not [p for p in seen["paths"] if "workspace" in p or "session" in p]
    assert seen["platform_modules"] == []
    tables = table_names(fresh_url)
    assert "jobyard_jobs" in tables
    assert not {t for t in tables if "workspace" in t or "session" in t}
