"""A throwaway PostgreSQL 15 cluster of our own, so faults can restart it.

The machine's shared server (127.0.0.1:5432) is never touched: this cluster lives in a temporary
directory, listens on a free port of its own and on a Unix socket in that directory, trusts local
connections, and is stopped and deleted at the end. As root, initdb and pg_ctl run as the
`postgres` OS user (initdb refuses root).

Durability settings: `fsync=off` (the operating system never crashes in these tests, only the
server does, and WAL written before a commit returns survives a server crash in the page cache)
and `synchronous_commit=on` (a commit returns only after its WAL is written, so `-m immediate`
cannot lose an acknowledged enqueue).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

PG_BIN: Final = Path(os.environ.get("JOBYARD_CHAOS_PG_BIN", "/usr/lib/postgresql/15/bin"))
SHARED_PORT: Final = 5432  # the machine's own server: never ours
_PREFIX: Final = "jobyard-chaos-pg-"
_STALE_AFTER: Final = 3 * 3600.0


def postgres_problem() -> str | None:
    """Why a private cluster cannot be made here, or None when it can."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"{PG_BIN / tool} is missing (Debian package postgresql-15)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root needs runuser to run initdb as the postgres user"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return port


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_clusters() -> list[str]:
    """Stop and delete clusters left by chaos runs that were themselves killed.

    Only directories named by this module, older than three hours, whose owning test process is
    gone; the server is stopped through its own data directory, never by name.
    """
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            owner = int((path / "owner.pid").read_text())
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            continue
        if age < _STALE_AFTER or _pid_alive(owner):
            continue
        data = path / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [
                    *_as_postgres(),
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


class PrivatePostgres:
    """One private cluster: `start()`, `url(db)`, `restart(mode)`, `destroy()`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=_PREFIX))
        (self.root / "owner.pid").write_text(str(os.getpid()))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.started = False
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    # -- lifecycle -------------------------------------------------------------------------
    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*_as_postgres(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                f"{self.server_log()[-3000:]}"
            )
        return proc

    @property
    def options(self) -> str:
        return f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"

    def _configure(self) -> None:
        settings = {
            "fsync": "off",
            "synchronous_commit": "on",
            "full_page_writes": "off",
            "max_connections": "300",
            "shared_buffers": "'128MB'",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %a '",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# jobyard chaos suite\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def start(self) -> None:
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._configure()
        last: Exception | None = None
        for _ in range(5):
            self.port = _free_port()
            if self.port == SHARED_PORT:
                continue
            try:
                self._pg_ctl("start")
            except RuntimeError as exc:  # the port was taken meanwhile: try another
                last = exc
                continue
            self.started = True
            return
        raise RuntimeError(f"could not start the private cluster: {last}")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            self.options,
            "-w",
            "-t",
            "60",
            *extra,
            action,
        )

    def restart(self, mode: str) -> tuple[float, float]:
        """`pg_ctl restart -m MODE` of this cluster only; returns (began, ready) host times."""
        if mode not in ("fast", "immediate"):
            raise ValueError(mode)
        began = time.time()
        self._pg_ctl("restart", "-m", mode)
        return began, time.time()

    def destroy(self) -> None:
        if self.started:
            with contextlib.suppress(Exception):
                self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
            pidfile = self.data / "postmaster.pid"
            if pidfile.exists():  # fast stop failed: immediate, then the postmaster itself
                with contextlib.suppress(Exception):
                    self._run(
                        str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
                    )
            if pidfile.exists():
                with contextlib.suppress(Exception):
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    # -- access ----------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""
