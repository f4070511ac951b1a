"""The library's boundaries, checked: the engine knows nothing of the workspace platform, nothing
above the store names a database driver, and the command line reaches the store only through its
doors (JobAdmin, the Queue, the platform's own store).

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
# May import the platform: the platform itself, the HTTP app that composes it, and exactly two
# modules of the CLI: the app, which adds the platform's command groups, and the service's
# composition (its runtime, limits and migrations). Every other CLI module sees only the engine.
PLATFORM_USERS = ("workspaces", "api", "cli/commands", "cli/service")
# The store layers: the engine's, and the platform's persistence beside its SQL.
STORE_LAYERS = ("store", "workspaces/store")
# The command line: the engine's commands and the platform's.
CLI = ("cli", "workspaces/cli")
# Of those, the modules that may open or name the store: what an invocation opens, and the
# service's migrations. The others read and act through JobAdmin, the Queue and the platform's
# store; the store's value types (jobyard.store.records: JobFilter, ...) are fine anywhere.
STORE_OPENERS = ("cli/context", "cli/service")
STORE_DOORS_AROUND = ("jobyard.store", "jobyard.status.cluster_status", "jobyard.open_store")

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
    """Modules that import the platform without being allowed to."""
    return [
        (relative, sorted(filter(names_platform, imported)))
        for relative, imported in found
        if not under(relative, PLATFORM_USERS) and any(map(names_platform, imported))
    ]


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
    ]
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
