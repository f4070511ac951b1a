"""Finding, running and comparing the examples of the documentation (see test_docs_examples.py
for the rules a doc writer follows)."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.live_server import free_port

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

DOC_URL = "http://127.0.0.1:8000"  # where the docs' server listens
DOC_PG_URL = "postgresql://postgres@127.0.0.1:5432/myapp"  # the docs' PostgreSQL database
COMMAND_TIMEOUT = 60.0  # seconds, for one example or one command of a transcript

INPUT_LANGS = {"python", "bash"}
OUTPUT_LANGS = {"text", "json"}
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<what>[a-z ]+?)\s*(?:\((?P<why>.*)\))?\s*-->$")
KNOWN_MARKERS = {"skip", "run", "server", "own server", "any order", "progress varies"}


# -- finding the examples -------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str  # the lines between the fences, without the last newline
    markers: dict[str, str]  # docs-test markers right above the fence: keyword -> reason
    section: int  # which heading the block is under (blocks of one section share it)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def is_transcript(self) -> bool:
        return self.lang in ("text", "console") and self.text.startswith("$ ")


@dataclass(frozen=True)
class Example:
    """Something to run: a python or bash block with the output block that follows it, a
    transcript (commands and their output in one block), or a block marked `run`."""

    code: Block
    output: Block | None  # None for a transcript, or for a block run only for its effects

    @property
    def kind(self) -> str:
        if self.code.is_transcript:
            return "transcript"
        return self.code.lang

    @property
    def skip_reason(self) -> str | None:
        return self.code.markers.get("skip")


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text().split("\n")
    section = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section += 1
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            start = i
            i += 1
            while not lines[i].startswith("```"):
                i += 1
            found.append(
                Block(
                    page,
                    start + 1,
                    fence.group(1),
                    "\n".join(lines[start + 1 : i]),
                    _markers(page, lines, start),
                    section,
                )
            )
        i += 1
    return found


def _markers(page: Path, lines: list[str], fence: int) -> dict[str, str]:
    """The `<!-- docs-test: ... -->` lines directly above a fence."""
    markers: dict[str, str] = {}
    i = fence - 1
    while i >= 0 and lines[i].startswith("<!-- docs-test"):
        match = MARKER.match(lines[i].strip())
        if not match or match.group("what") not in KNOWN_MARKERS:
            raise ValueError(f"{page.relative_to(ROOT)}:{i + 1}: unknown marker {lines[i]!r}")
        markers[match.group("what")] = match.group("why") or ""
        i -= 1
    if "skip" in markers and not markers["skip"]:
        raise ValueError(f"{page.relative_to(ROOT)}:{fence + 1}: say why: skip (reason)")
    return markers


def examples(page: Path) -> list[Example]:
    found: list[Example] = []
    page_blocks = blocks(page)
    for n, block in enumerate(page_blocks):
        if block.is_transcript:
            found.append(Example(block, None))
        elif block.lang in INPUT_LANGS:
            after = page_blocks[n + 1] if n + 1 < len(page_blocks) else None
            if after and after.lang in OUTPUT_LANGS and after.section == block.section:
                found.append(Example(block, after))
            elif "run" in block.markers or "skip" in block.markers:
                found.append(Example(block, None))
    return found


def all_examples() -> list[Example]:
    return [example for page in PAGES for example in examples(page)]


# -- normalizing what differs from run to run -------------------------------------------------
TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?")
NUMBERED = {  # each distinct one becomes <ws-1>, <ws-2>, ... in order of appearance
    "ws": re.compile(r"\bws_[0-9a-f]{16}\b"),
    "se": re.compile(r"\bse_[0-9a-f]{16}\b"),
    "node": re.compile(r"\b[A-Za-z0-9][A-Za-z0-9.-]*-\d+-[0-9a-f]{6}\b"),  # host-pid-random
}
FIXED = [
    (re.compile(r'"pid": ?\d+'), '"pid": "<pid>"'),
    # Jobs finished during the last full minute: how many depends on when the minute turned.
    (re.compile(r"^(jobyard_jobs_finished_last_minute) \S+$", re.M), r"\1 <n>"),
]


@dataclass
class Normalizer:
    """Rewrites one side's outputs (the docs', or the run's); numbering is kept across the
    blocks of a page, so an id that the page shows twice must come out twice."""

    seen: dict[str, dict[str, int]] = field(default_factory=dict)

    def __call__(self, text: str) -> str:
        text = TIME.sub("<time>", text)
        for name, pattern in NUMBERED.items():
            numbers = self.seen.setdefault(name, {})
            text = pattern.sub(
                lambda m, n=numbers, k=name: f"<{k}-{n.setdefault(m.group(), len(n) + 1)}>", text
            )
        for pattern, replacement in FIXED:
            text = pattern.sub(replacement, text)
        # Spaces at the end of a line do not show (rich pads a table's title to its width).
        return "\n".join(line.rstrip() for line in text.split("\n"))


def mismatch(
    example: Example, expected: str, actual: str, docs: Normalizer, run: Normalizer
) -> str | None:
    """None when the run printed what the docs show, else a message with a diff."""
    want, got = docs(expected), run(actual)
    block = example.output or example.code
    markers = example.code.markers
    if block.lang == "json" and "\n" in want.strip():
        # One pretty-printed JSON document: compare values, not layout.
        want, got = _pretty(want), _pretty(got)
    elif "progress varies" in markers:
        want, got = _without_progress(want), _without_progress(got)
    if want == got:
        return None
    if "any order" in markers and sorted(want.split("\n")) == sorted(got.split("\n")):
        return None
    diff = difflib.unified_diff(
        want.split("\n"), got.split("\n"), f"{block.where} (docs)", "run", lineterm=""
    )
    return f"{block.where}: the output differs from the docs\n" + "\n".join(diff)


# What `--wait` shows at each poll that sees a new state, between "waiting" and the end: which
# states a poll happens to see depends on timing.
PROGRESS = re.compile(
    r"^(?:workspace|session) \S+: (?:pending|initializing|failed, will retry) \(job .*$\n?", re.M
)


def _without_progress(text: str) -> str:
    return PROGRESS.sub("", text)


def _pretty(text: str) -> str:
    """A JSON document laid out one way, whatever its layout was; other text as it is."""
    try:
        return json.dumps(json.loads(text), indent=4, ensure_ascii=False)
    except json.JSONDecodeError:
        return text


def chomp(output: str) -> str:
    """Output as a block shows it: the last newline, if any, is not part of it."""
    return output[:-1] if output.endswith("\n") else output


# -- running ----------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user who has set nothing: no JOBYARD_* settings, no COLUMNS."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JOBYARD_") and k not in ("COLUMNS", "LINES", "PYTHONPATH")
    }
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleave as on a terminal
    return {**env, **extra}


def jobyard_command() -> str:
    script = Path(sys.executable).with_name("jobyard")
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m jobyard.cli"


@dataclass
class Ran:
    output: str  # stdout, or stdout and stderr interleaved
    errors: str  # stderr, when not interleaved
    code: int | None  # None when it was killed for taking too long

    def describe(self) -> str:
        status = "killed after a timeout" if self.code is None else f"exit status {self.code}"
        return f"{status}\n--- output ---\n{self.output}--- stderr ---\n{self.errors}"


def run(argv: list[str], cwd: Path, env: dict[str, str], *, merge: bool = True) -> Ran:
    """Run a command in a process group of its own, and leave nothing of it behind."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    code: int | None
    try:
        output, errors = proc.communicate(timeout=COMMAND_TIMEOUT)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        output, errors = proc.communicate()
        code = None
    _kill_group(proc.pid)  # anything it left running in the background
    return Ran(output, errors or "", code)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class Server:
    """`jobyard serve` as `make run` starts it, in `cwd`, on a free port."""

    def __init__(self, cwd: Path, env: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = cwd / f"serve-{port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*shlex.split(jobyard_command()), "serve", "--port", str(port)],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jobyard serve did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C would drain it; SIGKILL if it has not stopped within 30 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc.pid)
                self.proc.wait()
        _kill_group(self.proc.pid)


def transcript_commands(text: str) -> Iterator[str]:
    """A transcript's commands: its `$ ` lines, with their `\\` continuations."""
    command: list[str] = []
    continued = False
    for line in text.split("\n"):
        if continued:
            command.append(line)
        elif line.startswith("$ "):
            if command:
                yield "\n".join(command)
            command = [line[2:]]
        continued = bool(command) and line.endswith("\\")
    if command:
        yield "\n".join(command)


ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", re.M)


class ShellSession:
    """Runs one page's bash examples and transcripts in order, in one directory, the way a
    reader would in one terminal: files, the database and shell variables carry over from one
    example to the next, and `jobyard serve` runs while the examples need it."""

    def __init__(self, root: Path, postgres: PostgresFactory) -> None:
        self.root = root
        self.cwd = root / "page"
        self.cwd.mkdir()
        self.env = clean_env()
        self.state = root / "shell-state.sh"
        self.names: set[str] = set()  # shell variables assigned so far
        self.server: Server | None = None
        self.postgres = postgres
        self.pg_url: str | None = None
        self.docs = Normalizer()
        self.ran = Normalizer()

    def close(self) -> None:
        self._stop_server()

    def check(self, example: Example) -> str | None:
        """None when the example printed what the docs show, else what went wrong."""
        code = example.code
        if "own server" in code.markers:
            # What it changes must not reach the page's other examples.
            self._stop_server()
            cwd = self.root / f"own-{code.line}"
            cwd.mkdir()
            server = self._start_server(cwd)
            try:
                return self._check(example, cwd, server, Normalizer(), Normalizer())
            finally:
                server.stop()
        if "server" in code.markers or DOC_URL in code.text:
            if self.server is None:
                self.server = self._start_server(self.cwd)
        else:
            self._stop_server()
        return self._check(example, self.cwd, self.server, self.docs, self.ran)

    def _check(
        self,
        example: Example,
        cwd: Path,
        server: Server | None,
        docs: Normalizer,
        ran: Normalizer,
    ) -> str | None:
        code = example.code
        if example.kind == "transcript":
            actual = []
            for command in transcript_commands(code.text):
                output = self._bash(command, cwd, server).output
                actual.append(f"$ {command}\n{output}")
            return mismatch(example, code.text, chomp("".join(actual)), docs, ran)
        result = self._bash(code.text, cwd, server)
        if example.output is None:  # run for its effects only
            if result.code != 0:
                return f"{code.where}: failed, {result.describe()}"
            return None
        problem = mismatch(example, example.output.text, chomp(result.output), docs, ran)
        if problem and result.code != 0:
            problem += f"\n({result.describe()})"
        return problem

    def _bash(self, code: str, cwd: Path, server: Server | None) -> Ran:
        script = code.replace(".venv/bin/jobyard", jobyard_command())
        script = script.replace(".venv/bin/python", shlex.quote(sys.executable))
        if server is not None:
            script = script.replace(DOC_URL, server.url)
        if DOC_PG_URL in script:
            self.pg_url = self.pg_url or self.postgres.create()
            script = script.replace(DOC_PG_URL, self.pg_url)
        self.names.update(ASSIGNMENT.findall(code))
        state = shlex.quote(str(self.state))
        keep = f"declare -p {' '.join(sorted(self.names))} > {state} 2>/dev/null\n"
        ran = run(
            [
                "bash",
                "-c",
                f"[ -f {state} ] && source {state}\n{script}\n"
                f"__status=$?\n{keep if self.names else ''}exit $__status\n",
            ],
            cwd,
            self.env,
        )
        output = ran.output
        if server is not None:
            output = output.replace(server.url, DOC_URL)
        if self.pg_url:
            output = output.replace(self.pg_url, DOC_PG_URL)
        return Ran(output, ran.errors, ran.code)

    def _start_server(self, cwd: Path) -> Server:
        server = Server(cwd, self.env, free_port())
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def _stop_server(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            server.stop()


class PostgresUnavailable(Exception):
    pass


class PostgresFactory:
    """Fresh, empty databases standing in for the docs' `myapp`, dropped at the end."""

    def __init__(
        self, server: str, admin: Callable[[], Any], problem: Callable[[], str | None]
    ) -> None:
        self.server = server
        self.admin = admin  # an autocommit connection to the server
        self.problem = problem  # why the server cannot be used, or None
        self.created: list[str] = []

    def create(self) -> str:
        problem = self.problem()
        if problem is not None:
            raise PostgresUnavailable(problem)
        name = f"jobyard_docs_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        self.created.append(name)
        return f"{self.server}/{name}"

    def drop_all(self) -> None:
        with self.admin() as conn:
            for name in self.created:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
