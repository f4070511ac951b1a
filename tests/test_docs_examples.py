"""The examples of README.md and docs/*.md print what the docs say they print.

Which blocks are run:

- A ```python or ```bash block followed, in the same section (no heading between), by a
  ```text or ```json block: the second block is the first one's output. Prose may stand
  between them ("Output:").
- A ```text (or ```console) block whose first line starts with `$ `: a transcript. Each `$ `
  line is a command, and the lines up to the next `$ ` line are what it prints.

Everything else (synopses, diagrams, examples without an output block) is not run. So an
example with an output block is checked unless it says otherwise, with a marker comment on the
line(s) right above its opening fence:

- `<!-- docs-test: skip (why) -->`: not run, for what cannot run in a test (a server that runs
  until Ctrl-C, a command that needs a terminal or another server configuration). The reason
  is required.
- `<!-- docs-test: run -->`: a bash block without an output block, run for its effects
  (it must exit 0), such as the commands that set up the examples after it.
- `<!-- docs-test: server -->`: runs while `jobyard serve` runs (blocks that name
  http://127.0.0.1:8000 get the server without saying so).
- `<!-- docs-test: own server (why) -->`: runs against a server of its own in a directory of
  its own, so that what it changes does not reach the page's other examples.
- `<!-- docs-test: any order -->`: the output's lines may come in any order.
- `<!-- docs-test: progress varies -->`: the `--wait` progress lines that report a passing
  state (`pending (...)`, `initializing (...)`, `failed, will retry (...)`) are left out on both
  sides, since which states a poll happens to see depends on timing.

How they are run:

- Python: each example on its own, as example.py in an empty directory, with this test's
  interpreter. It must exit 0, and its stdout is compared.
- Bash blocks and transcripts: one page at a time, in page order, in one directory, as one
  reader would in one terminal: files, the database (jobyard.db) and shell variables carry over
  from one example to the next. `.venv/bin/jobyard` is the jobyard beside this interpreter.
  Output is stdout and stderr together, as a terminal shows them. A page's `jobyard serve`
  (started as `make run` would, in that directory, on a free port that replaces
  127.0.0.1:8000) runs for each stretch of consecutive examples that need it. The docs'
  PostgreSQL database (`myapp` on 127.0.0.1:5432) is a fresh database on JOBYARD_TEST_PG;
  without PostgreSQL those examples are left out with a warning (they fail with CI=true).
- The environment has no JOBYARD_* settings, as for a reader who set none.
- Each example marked skip is listed, with its reason, in pytest's summary of skipped tests.

Before comparing, what differs from run to run is rewritten on both sides (see
`docs_examples.Normalizer`): times, workspace, session and node ids (each distinct one numbered
in order of appearance, so a page that shows one id twice must print one id twice), process
ids, and the count of jobs finished in the last full minute. Spaces at the end of a line, and
the output's last newline, do not count. A ```json output block holding one pretty-printed
document is compared after laying both sides out alike: values and key order count, the
command's indentation does not.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, PG_SERVER, _admin, _pg_available
from tests.docs_examples import (
    PAGES,
    ROOT,
    Example,
    Normalizer,
    PostgresFactory,
    PostgresUnavailable,
    ShellSession,
    all_examples,
    chomp,
    clean_env,
    examples,
    mismatch,
    run,
)

PYTHON = [e for e in all_examples() if e.kind == "python" and not e.skip_reason]
SHELL_PAGES = [
    p for p in PAGES if any(e.kind != "python" and not e.skip_reason for e in examples(p))
]
SKIPPED = [e for e in all_examples() if e.skip_reason]


@pytest.fixture
def postgres() -> Iterator[PostgresFactory]:
    factory = PostgresFactory(PG_SERVER, _admin, _pg_available)
    try:
        yield factory
    finally:
        if factory.created:
            factory.drop_all()


@pytest.mark.parametrize("example", SKIPPED, ids=lambda e: e.code.where)
def test_example_marked_skip(example: Example) -> None:
    """Lists each example the docs mark `skip`, with the reason, in pytest's summary."""
    pytest.skip(f"{example.code.where}: {example.skip_reason}")


@pytest.mark.parametrize("example", PYTHON, ids=lambda e: e.code.where)
def test_python_example_prints_its_output_block(example: Example, tmp_path: Path) -> None:
    assert example.output is not None
    (tmp_path / "example.py").write_text(example.code.text + "\n")
    ran = run([sys.executable, "example.py"], tmp_path, clean_env(), merge=False)
    if ran.code != 0:
        pytest.fail(f"{example.code.where}: the example failed, {ran.describe()}", pytrace=False)
    problem = mismatch(example, example.output.text, chomp(ran.output), Normalizer(), Normalizer())
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.mark.timeout(600)  # a page runs many commands; each is killed after 60 s
@pytest.mark.parametrize("page", SHELL_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_examples_print_their_output_blocks(
    page: Path, tmp_path: Path, postgres: PostgresFactory
) -> None:
    runnable = [e for e in examples(page) if e.kind != "python" and not e.skip_reason]
    if shutil.which("curl") is None and any("curl " in e.code.text for e in runnable):
        if IN_CI:
            pytest.fail("curl is required in CI to run the docs' HTTP examples")
        pytest.skip("curl is not installed")
    session = ShellSession(tmp_path, postgres)
    problems: list[str] = []
    without_postgres: list[str] = []
    try:
        for example in runnable:
            try:
                problem = session.check(example)
            except PostgresUnavailable as exc:
                if IN_CI:
                    raise
                without_postgres.append(f"{example.code.where}: {exc}")
                continue
            if problem:
                problems.append(problem)
    finally:
        session.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
    if without_postgres:
        warnings.warn(
            "not run, PostgreSQL is unreachable: " + "; ".join(without_postgres), stacklevel=1
        )
