"""Render docs/benchmarks.md from a bench/results/*.json file.

    .venv/bin/python bench/report.py                       # the newest results file
    .venv/bin/python bench/report.py bench/results/X.json  # a given one

A results file that lacks some system (a `make bench SYSTEMS=jobyard` run) is completed with
that system's records from the newest full results file that has them, and the report says so.
A quick run's report goes next to its JSON in bench/results/, never to docs/.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"

PEERS = ("pgqueuer", "procrastinate")
PG_SYSTEMS = ("jobyard", *PEERS)
LABELS = {
    "jobyard": "jobyard",
    "pgqueuer": "PgQueuer",
    "procrastinate": "Procrastinate",
    "jobyard-sqlite": "jobyard (SQLite)",
}

Record = dict[str, Any]
TIMES = "\u00d7"  # multiplication sign, for ratios
DASH = "\u2013"  # en dash, for ranges


# -- loading ----------------------------------------------------------------------------------
def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    data["_file"] = path.name
    for record in data["records"]:
        record["_file"] = path.name
    return data


def fill_missing(data: dict[str, Any]) -> list[str]:
    """Borrow what this run lacks, or failed at, from the newest other (non-quick) runs: a
    `make bench SYSTEMS=jobyard` run takes the peers' rows, a full run a re-measured part."""

    def usable(r: Record) -> bool:
        return "error" not in r

    have = {(r["scenario"], r["system"]) for r in data["records"] if usable(r)}
    borrowed: dict[str, set[str]] = {}
    others = sorted(
        (p for p in RESULTS.glob("*.json") if "-quick" not in p.name and p.name != data["_file"]),
        reverse=True,
    )
    for path in others:
        try:
            other = load(path)
        except (OSError, ValueError, KeyError):
            continue
        if other.get("quick"):
            continue
        taken = [
            r for r in other["records"] if usable(r) and (r["scenario"], r["system"]) not in have
        ]
        if not taken:
            continue
        keys = {(r["scenario"], r["system"]) for r in taken}
        # A borrowed pair replaces this run's failed records of it.
        data["records"] = [
            r for r in data["records"] if (r["scenario"], r["system"]) not in keys
        ] + taken
        have |= keys
        for r in taken:
            borrowed.setdefault(path.name, set()).add(
                f"{r['scenario']} {LABELS.get(r['system'], r['system'])}"
            )
    return [
        f"{', '.join(sorted(what))} from `bench/results/{name}`"
        for name, what in sorted(borrowed.items())
    ]


def merge(data: dict[str, Any], paths: Sequence[str]) -> list[str]:
    """Records of later, partial runs (a re-measured scenario) replace this run's."""
    notes = []
    for name in paths:
        other = load(Path(name))
        taken = [r for r in other["records"] if "error" not in r]
        keys = {(r["scenario"], r["system"]) for r in taken}
        data["records"] = [
            r for r in data["records"] if (r["scenario"], r["system"]) not in keys
        ] + taken
        what = sorted(f"{sc} {LABELS.get(sy, sy)}" for sc, sy in keys)
        notes.append(f"{', '.join(what)} from `bench/results/{other['_file']}`")
    return notes


def records(data: dict[str, Any], scenario: str, system: str) -> list[Record]:
    return [r for r in data["records"] if r["scenario"] == scenario and r["system"] == system]


def ok(recs: Sequence[Record]) -> list[Record]:
    return [r for r in recs if "error" not in r and "skipped" not in r]


# -- formatting -------------------------------------------------------------------------------
def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def med(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def stat(values: Sequence[float], digits: int = 0) -> tuple[str, str]:
    """(median, range) cells."""
    if not values:
        return "—", "—"
    if len(values) == 1:
        return num(values[0], digits), "1 run"
    return num(statistics.median(values), digits), (
        f"{num(min(values), digits)}{DASH}{num(max(values), digits)}"
    )


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}{TIMES}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def failures(recs: Sequence[Record]) -> str:
    errors = [r["error"] for r in recs if "error" in r]
    return f" ({len(errors)} failed: {errors[0]})" if errors else ""


def source(recs: Sequence[Record], data: dict[str, Any]) -> str:
    files = {r["_file"] for r in recs}
    return " †" if files and data["_file"] not in files else ""


# -- sections ---------------------------------------------------------------------------------
def throughput_table(
    data: dict[str, Any],
    scenario: str,
    *,
    systems: Sequence[str] = PG_SYSTEMS,
    extra: Callable[[str, list[Record]], list[str]] | None = None,
    extra_header: Sequence[str] = (),
) -> str:
    j = med([r["jobs_per_s"] for r in ok(records(data, scenario, "jobyard"))])
    rows = []
    for system in systems:
        recs = records(data, scenario, system)
        if recs and all("skipped" in r for r in recs):
            rows.append([LABELS[system], "n/a", "n/a", "n/a", *(["n/a"] * len(extra_header))])
            continue
        good = ok(recs)
        values = [r["jobs_per_s"] for r in good]
        m, rng = stat(values)
        name = LABELS[system] + source(recs, data) + failures(recs)
        cells = [name, m, rng, "—" if system == "jobyard" else ratio(j, med(values))]
        if extra:
            cells += extra(system, good)
        rows.append(cells)
    header = ["system", "jobs/s (median)", "range", "jobyard ÷ system", *extra_header]
    return table(header, rows)


def enqueue_table(data: dict[str, Any]) -> str:
    j = med([r["enqueue_per_s"] for r in ok(records(data, "S1", "jobyard"))])
    rows = []
    for system in PG_SYSTEMS:
        recs = records(data, "S1", system)
        values = [r["enqueue_per_s"] for r in ok(recs)]
        m, rng = stat(values)
        rows.append(
            [
                LABELS[system] + source(recs, data),
                m,
                rng,
                "—" if system == "jobyard" else ratio(j, med(values)),
            ]
        )
    return table(["system", "jobs/s (median)", "range", "jobyard ÷ system"], rows)


def latency_table(data: dict[str, Any], scenario: str, systems: Sequence[str]) -> str:
    def pick(system: str, key: str) -> list[float]:
        return [r[key] for r in ok(records(data, scenario, system))]

    j50 = med(pick("jobyard", "p50_ms"))
    rows = []
    for system in systems:
        recs = records(data, scenario, system)
        cells = [LABELS[system] + source(recs, data) + failures(recs)]
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            m, rng = stat(pick(system, key), 2)
            cells.append(f"{m} ({rng})")
        cells.append(num(med(pick(system, "max_ms")), 1))
        if system in PEERS:
            cells.append(ratio(j50, med(pick(system, "p50_ms"))))
        else:
            cells.append("—")
        rows.append(cells)
    header = [
        "system",
        "p50 ms (range)",
        "p95 ms (range)",
        "p99 ms (range)",
        "max ms (median)",
        "jobyard ÷ system, p50",
    ]
    return table(header, rows)


def s5_extra(data: dict[str, Any]) -> Callable[[str, list[Record]], list[str]]:
    def extra(system: str, good: list[Record]) -> list[str]:
        s1 = med([r["jobs_per_s"] for r in ok(records(data, "S1", system))])
        return [ratio(med([r["jobs_per_s"] for r in good]), s1)]

    return extra


def s6_extra(data: dict[str, Any]) -> Callable[[str, list[Record]], list[str]]:
    def extra(system: str, good: list[Record]) -> list[str]:
        s1_recs = ok(records(data, "S1", system))
        s1 = med([r["jobs_per_s"] for r in s1_recs])
        claim6 = med([r["claim_explain"]["median_ms"] for r in good if "claim_explain" in r])
        claim1 = med([r["claim_explain"]["median_ms"] for r in s1_recs if "claim_explain" in r])
        return [
            ratio(med([r["jobs_per_s"] for r in good]), s1),
            num(claim1, 2),
            num(claim6, 2),
        ]

    return extra


def sqlite_section(data: dict[str, Any]) -> str:
    def tput(scenario: str, system: str) -> list[float]:
        return [r["jobs_per_s"] for r in ok(records(data, scenario, system))]

    rows = []
    for scenario, what in (
        ("S1", "S1 drain, 1 worker of 16"),
        ("S2", "S2 single enqueue"),
        ("S4", "S4 drain, 2 workers of 8"),
    ):
        lite = tput(scenario, "jobyard-sqlite")
        pg = tput(scenario, "jobyard")
        m, rng = stat(lite)
        recs = records(data, scenario, "jobyard-sqlite")
        rows.append(
            [what + source(recs, data) + failures(recs), f"{m} jobs/s", rng,
             f"{num(med(pg))} jobs/s", ratio(med(lite), med(pg))]
        )  # fmt: skip
    for scenario, what in (
        ("S3-inproc", "S3 latency, producer in the worker's process"),
        ("S3", "S3 latency, producer in another process"),
    ):
        recs = records(data, scenario, "jobyard-sqlite")
        good = ok(recs)
        cells = []
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            m, _ = stat([r[key] for r in good], 1)
            cells.append(m)
        pg_recs = ok(records(data, "S3", "jobyard"))
        pg_cells = [num(med([r[k] for r in pg_recs]), 1) for k in ("p50_ms", "p95_ms", "p99_ms")]
        rng = stat([r["p50_ms"] for r in good], 1)[1]
        rows.append(
            [what + source(recs, data) + failures(recs),
             "p50/p95/p99 " + " / ".join(cells) + " ms", f"p50 {rng}",
             " / ".join(pg_cells) + " ms",
             ratio(med([r["p50_ms"] for r in good]), med([r["p50_ms"] for r in pg_recs]))]
        )  # fmt: skip
    header = ["scenario", "SQLite (median)", "range", "jobyard on PostgreSQL", "SQLite ÷ PG"]
    return table(header, rows)


FLOOR_PROBES = {
    "pgbench": "pgbench, no Python",
    "asyncpg": "bare asyncpg (PgQueuer's driver) on uvloop",
    "psycopg": "bare psycopg 3 (jobyard's driver) on asyncio",
}


def floor_section(data: dict[str, Any]) -> str:
    """What the same insert costs with no job system around it, beside S2."""
    recs_all = records(data, "floor", "jobyard")
    recs = ok(recs_all)
    if not recs:
        return ""
    probes = recs[-1]["probes"]
    jobyard = med([r["jobs_per_s"] for r in ok(records(data, "S2", "jobyard"))])
    pgqueuer = med([r["jobs_per_s"] for r in ok(records(data, "S2", "pgqueuer"))])
    rows = []
    for probe, label in FLOOR_PROBES.items():
        if probe not in probes:
            continue
        median, rng = stat(probes[probe]["runs"])
        rows.append([label, median, rng, ratio(jobyard, probes[probe]["median"])])
    header = ["the insert alone, through", "inserts/s (median)", "range", "jobyard S2 ÷ it"]
    return (
        f"\nThe floor under S2{source(recs_all, data)}: jobyard's own one-job insert "
        "([`bench/pgbench/insert.sql`](../bench/pgbench/insert.sql), without its `NOTIFY`), one "
        "statement and one synchronous commit per call, awaited one after another from one "
        "connection as S2's producer does, with no job system around it "
        "([`bench/floor.py`](../bench/floor.py); a fresh database per run). No system can "
        "enqueue one job per call and commit faster than its driver sends this one statement"
        + (f"; 1.5{TIMES} PgQueuer's S2 would be {num(1.5 * pgqueuer)} jobs/s" if pgqueuer else "")
        + ".\n\n"
        + table(header, rows)
        + "\n"
    )


LATENCY_FLOOR_PROBES = {
    "asyncpg": ("bare asyncpg (PgQueuer's driver), worker on uvloop", "pgqueuer"),
    "psycopg": ("bare psycopg 3 (jobyard's driver) on asyncio", "jobyard"),
}


def latency_floor_section(data: dict[str, Any]) -> str:
    """What S3's path costs through each bare driver, beside S3: the overhead each system adds
    over its own driver's floor."""
    recs_all = records(data, "floor", "jobyard")
    recs = [r for r in ok(recs_all) if "latency" in r]
    if not recs:
        return ""
    floors = recs[-1]["latency"]
    rows = []
    for driver, (label, system) in LATENCY_FLOOR_PROBES.items():
        if driver not in floors:
            continue
        runs = floors[driver]["runs"]
        cells = [label]
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            m, rng = stat([r[key] for r in runs], 2)
            cells.append(f"{m} ({rng})")
        p50 = med([r["p50_ms"] for r in ok(records(data, "S3", system))])
        added = f"+{p50 - floors[driver]['p50_ms']:.2f} ms" if p50 is not None else "—"
        cells.append(f"{LABELS[system]}: {added}")
        rows.append(cells)
    header = [
        "S3's path alone, through",
        "p50 ms (range)",
        "p95 ms (range)",
        "p99 ms (range)",
        "the system's S3 p50 over it",
    ]
    return (
        f"\nThe floor under S3{source(recs_all, data)}: the same path with no job system around "
        "it ([`bench/floor.py`](../bench/floor.py) `--path latency`; a fresh database per run). "
        "A worker process listens on one connection and, on each notification, sends jobyard's "
        "claim on a second, then records what it claimed as completed; another process enqueues "
        f"{num(recs[-1].get('latency_n'))} jobs at the same rate with jobyard's insert and its "
        "NOTIFY. Latency runs from just before the insert is sent to the claim's return: every "
        "round trip S3's path needs, on one bare driver, with no job body. Both systems commit "
        "twice on the way (the enqueue, then the claim), each commit waiting for its WAL flush.\n\n"
        + table(header, rows)
        + "\n"
    )


PGBENCH_VARIANTS = {
    "statement": "complete the previous 16 and claim 16 in one statement, synchronous commit",
    "statement-async": "the same in a transaction with `SET LOCAL synchronous_commit = off`",
}


def pgbench_section(data: dict[str, Any]) -> tuple[str, float | None]:
    """The baseline's table, and the best jobs/s of the variant the engine itself uses."""
    recs_all = records(data, "pgbench", "jobyard")
    recs = ok(recs_all)
    if not recs:
        return ("Not run in this results file." + failures(recs_all)), None
    record = recs[-1]
    engine = record.get("engine_variant", "statement")
    j = med([r["jobs_per_s"] for r in ok(records(data, "S1", "jobyard"))])
    rows = []
    for r in record["runs"]:
        variant = r.get("variant", "statement")
        mark = " (jobyard's)" if variant == engine else ""
        rows.append(
            [
                f"{variant}{mark}",
                str(r["clients"]),
                str(r["threads"]),
                f"{r['seconds']} s",
                num(r["jobs_per_s"]),
                ratio(j, r["jobs_per_s"]),
            ]
        )
    best = max(
        (r["jobs_per_s"] for r in record["runs"] if r.get("variant", "statement") == engine),
        default=None,
    )
    header = ["variant", "clients (-c)", "threads (-j)", "duration", "jobs/s", "jobyard S1 ÷ it"]
    legend = "\n".join(f"- `{v}`: {text}" for v, text in PGBENCH_VARIANTS.items())
    marker = source(recs_all, data)
    note = f"Measured in another run{marker}.\n\n" if marker else ""
    return note + table(header, rows) + "\n\n" + legend, best


def memory_section(data: dict[str, Any]) -> str:
    recs = records(data, "memory", "jobyard")
    good = ok(recs)
    if not good:
        return "Not run in this results file." + failures(recs)
    r = good[-1]
    verdict = "within" if r["within_limit"] else "**over**"
    text = (
        f"One jobyard worker (PostgreSQL, concurrency 16) drained a backlog of "
        f"{r['n']:,} jobs at {num(r['jobs_per_s'])} jobs/s. Its peak resident set size was "
        f"**{r['vmhwm_mb']:.1f} MB** (VmHWM from /proc/<pid>/status, read just before the "
        f"stop; the process's own `ru_maxrss` at exit: {r['peak_rss_mb']:.1f} MB), {verdict} "
        f"the {r['limit_mb']:.0f} MB budget{source(recs, data)}."
    )
    if r.get("recorded_mb"):
        text += (
            f" Of that, the benchmark's own record of the {r['n']:,} start times (a list of "
            f"(time, payload) pairs, which keeps every payload alive) held about "
            f"{r['recorded_mb']:.1f} MB at the end, and the worker's RSS was "
            f"{r['rss_ready_mb']:.1f} MB when it was ready (interpreter, jobyard and its "
            f"dependencies imported, store connected, nothing run yet): jobyard's own peak is "
            f"about {r['vmhwm_mb'] - r['recorded_mb']:.0f} MB."
        )
    else:
        text += (
            " This includes the interpreter, jobyard and its dependencies, and the benchmark's "
            f"list of {r['n']:,} start times."
        )
    return text


def load_summary(data: dict[str, Any]) -> str:
    loads = [r["load"] for r in data["records"] if "load" in r and r["_file"] == data["_file"]]
    if not loads:
        return "?"
    return (
        f"median {statistics.median(loads):.2f}, max {max(loads):.2f} "
        f"(2 CPUs: above 2 means work was waiting for a CPU)"
    )


def conditions_section(data: dict[str, Any]) -> str:
    c = data["conditions"]
    v = c["versions"]
    s = c["postgresql_settings"]
    git = c.get("jobyard_git", {})

    def ver(system: str, key: str) -> str:
        return str(v.get(system, {}).get(key, "—"))

    jobyard_src = git.get("source", "?")
    if git.get("uncommitted_changes_in_src"):
        changed = ", ".join(f"`{f}`" for f in git.get("changed_files", []))
        jobyard_src += f", with uncommitted changes to {changed}"
    rows = [
        ["date (UTC)", data.get("started_at", "?")],
        ["machine", f"{c['cpu_count']} CPUs ({c['cpu_model']}), {c['memory_total']} RAM, "
                    f"{c['machine']}"],
        ["load average (1 min) before / after", f"{data['load_before'][0]:.2f} / "
                                                f"{data.get('load_after', [float('nan')])[0]:.2f}"],
        ["load average (1 min) after each run", load_summary(data)],
        ["PostgreSQL", c["postgresql"].split(" on ")[0]],
        ["PostgreSQL settings", ", ".join(f"{k}={val}" for k, val in s.items())],
        ["Python", ver("jobyard", "python")],
        ["jobyard", f"{ver('jobyard', 'jobyard')} at {git.get('commit', '?')} ({jobyard_src}); "
                    f"psycopg {ver('jobyard', 'psycopg')}; SQLite {ver('jobyard', 'sqlite')}"],
        ["PgQueuer", f"{ver('pgqueuer', 'pgqueuer')}; asyncpg {ver('pgqueuer', 'asyncpg')}; "
                     f"uvloop {ver('pgqueuer', 'uvloop')}"],
        ["Procrastinate", f"{ver('procrastinate', 'procrastinate')}; psycopg "
                          f"{ver('procrastinate', 'psycopg')}; psycopg_pool "
                          f"{ver('procrastinate', 'psycopg_pool')}"],
        ["pgbench", c.get("pgbench", "?")],
        ["suite runtime", f"{data.get('runtime_seconds', 0) / 60:.1f} min"],
    ]  # fmt: skip
    return table(["", ""], rows)


def observations(data: dict[str, Any], pgbench_best: float | None) -> list[str]:
    """Facts computed from this run that a reader should not have to dig out."""
    notes: list[str] = []

    def m(scenario: str, system: str, key: str = "jobs_per_s") -> float | None:
        return med([r[key] for r in ok(records(data, scenario, system))])

    for system in ("jobyard", *PEERS, "jobyard-sqlite"):
        s1, s4 = m("S1", system), m("S4", system)
        if s1 and s4 and s4 < 0.9 * s1:
            notes.append(
                f"{LABELS[system]}: two worker processes of concurrency 8 (S4, "
                f"{num(s4)} jobs/s) are slower than one of 16 (S1, {num(s1)} jobs/s) on this "
                "2-core machine, where the workers, PostgreSQL and the orchestrator share two "
                "CPUs."
            )
    for system in ("jobyard", "pgqueuer"):
        s1, s5 = m("S1", system), m("S5", system)
        if s1 and s5 and s5 < s1:
            notes.append(
                f"{LABELS[system]}: the cluster-wide limit of 16 costs "
                f"{(1 - s5 / s1) * 100:.0f}% of S1's throughput ({num(s5)} vs {num(s1)} jobs/s)."
            )
        elif s1 and s5:
            notes.append(
                f"{LABELS[system]}: S5, with the limit, ran faster than S1 without it ({num(s5)} "
                f"vs {num(s1)} jobs/s): the limit's cost is lost in this run's noise."
            )
    floor = ok(records(data, "floor", "jobyard"))
    pgq2, jy2 = m("S2", "pgqueuer"), m("S2", "jobyard")
    if floor and pgq2 and jy2:
        probes = {p: v["median"] for p, v in floor[-1]["probes"].items()}
        target = 1.5 * pgq2
        parts = [
            f"{'more than' if target > rate else 'within what'} a bare {driver} connection "
            f"sends the same insert ({num(rate)}/s)"
            for driver, rate in (
                ("psycopg", probes.get("psycopg")),
                ("asyncpg", probes.get("asyncpg")),
            )
            if rate
        ]
        if parts:
            share = (
                f"; jobyard's S2 ({num(jy2)} jobs/s) is {jy2 / probes['psycopg'] * 100:.0f}% "
                "of bare psycopg's, its own driver"
                if probes.get("psycopg")
                else ""
            )
            notes.append(
                f"S2: 1.5{TIMES} PgQueuer would be {num(target)} jobs/s: "
                + ", and ".join(parts)
                + share
                + "."
            )
    lat = [r for r in floor if "latency" in r]
    j3, q3 = m("S3", "jobyard", "p50_ms"), m("S3", "pgqueuer", "p50_ms")
    if lat and j3 and q3:
        fl = {d: v["p50_ms"] for d, v in lat[-1]["latency"].items()}
        if fl.get("psycopg") and fl.get("asyncpg"):
            notes.append(
                f"S3: with no job system at all, S3's path costs {fl['psycopg']:.2f} ms at the "
                f"median through bare psycopg and {fl['asyncpg']:.2f} ms through bare asyncpg. "
                f"jobyard adds {j3 - fl['psycopg']:.2f} ms to its driver's floor, PgQueuer "
                f"{q3 - fl['asyncpg']:.2f} ms to its; the rest of the difference is the drivers'."
            )
    j1 = m("S1", "jobyard")
    if j1 and pgbench_best:
        notes.append(
            f"jobyard's S1 drain reaches {j1 / pgbench_best * 100:.0f}% of the pgbench "
            f"baseline's best ({num(pgbench_best)} jobs/s) for the variant jobyard uses: the "
            "same SQL without Python."
        )
    lite_cross = m("S3", "jobyard-sqlite", "p50_ms")
    if lite_cross is not None and lite_cross > 5:
        notes.append(
            f"jobyard on SQLite, producer in another process: p50 {lite_cross:.1f} ms. Other "
            "processes learn of new jobs by polling the file's change counter (see "
            "[guarantees](guarantees.md), *Wake-up*), so about half the polling interval is "
            "expected; an enqueue in the worker's own process wakes it at once."
        )
    for scenario in ("S1", "S2", "S4", "S5", "S6"):
        for system in ("jobyard", *PEERS, "jobyard-sqlite"):
            values = [r["jobs_per_s"] for r in ok(records(data, scenario, system))]
            if len(values) >= 2 and (max(values) - min(values)) > 0.25 * statistics.median(values):
                notes.append(
                    f"Noisy: {LABELS[system]} {scenario} runs spread "
                    f"{num(min(values))}{DASH}{num(max(values))} jobs/s "
                    f"({(max(values) - min(values)) / statistics.median(values) * 100:.0f}% of "
                    "the median)."
                )
    mine = [r for r in data["records"] if r["_file"] == data["_file"] and "load" in r]
    busy = [r for r in mine if r["load"] > 3.0]
    if busy:
        notes.append(
            f"{len(busy)} of {len(mine)} runs ended with the 1-minute load average above 3 on "
            "2 CPUs (other work on the machine); their numbers are the least trustworthy: "
            + ", ".join(
                f"{r['scenario']} {LABELS.get(r['system'], r['system'])} #{r['run']} "
                f"({r['load']:.1f})"
                for r in busy[:12]
            )
            + ("…" if len(busy) > 12 else "")
            + "."
        )
    waited = sum(r.get("waited_for_quiet", 0.0) for r in mine)
    if waited > 5:
        notes.append(
            f"The suite waited {waited:.0f} s in all for the machine's load to fall below 3 "
            "before starting runs."
        )
    failed = [r for r in data["records"] if "error" in r]
    for r in failed:
        notes.append(f"FAILED: {r['scenario']} {LABELS.get(r['system'], r['system'])} run "
                     f"{r['run']}: {r['error']}")  # fmt: skip
    issues: dict[str, set[str]] = {}
    for r in data["records"]:
        for line in r.get("log_issues", []):
            issues.setdefault(r["system"], set()).add(line)
    for system, lines in sorted(issues.items()):
        sample = "; ".join(sorted(lines)[:3])
        notes.append(f"{LABELS.get(system, system)} logged warnings or errors: `{sample}`")
    dups = [r for r in data["records"] if r.get("duplicates")]
    for r in dups:
        notes.append(f"{r['scenario']} {LABELS.get(r['system'], r['system'])} run {r['run']}: "
                     f"{r['duplicates']} job bodies ran more than once.")  # fmt: skip
    return notes


INTRO = """\
# Benchmarks

jobyard measured side by side with [PgQueuer](https://github.com/janbjorge/pgqueuer) and
[Procrastinate](https://github.com/procrastinate-org/procrastinate), two PostgreSQL job queues
for Python, on the same PostgreSQL server in the same run; then jobyard on its embedded SQLite
store, a `pgbench` baseline of jobyard's own SQL, and one worker's memory.

**What is measured.** Every system runs the same no-op job: its body appends `time.time()` and
a reference to its payload (`{"i": n}`, decoded only after the run) to a list, and returns.
Throughput counts only completions committed to the database: the orchestrator polls each
system's own tables from a separate connection (jobyard's `completed` rows, PgQueuer's
`successful` log rows, Procrastinate's `succeeded` jobs and events), takes the time of the last
committed completion from the database, and afterwards checks that every job is completed there
and that each job body ran.

- **S1 drain**: 20,000 jobs enqueued up front with each system's bulk API, 1,000 per call (that
  rate is reported separately), then one worker process with concurrency 16 runs them all.
  jobs/s = N ÷ (last committed completion - worker start).
- **S2 single enqueue**: 5,000 enqueues from one producer, one call and one transaction each.
- **S3 latency**: an idle worker is running; another process enqueues 1,000 jobs at 100/s (one
  call each); latency = the job body's start time - the time taken just before the enqueue call
  (same host clock).
- **S4 two processes**: S1 with two worker processes of concurrency 8.
- **S5 global limit**: S1 with a cluster-wide limit of 16 running jobs of the type.
- **S6 scale**: S1 after 1,000,000 completed jobs already sit in each system's own tables; the
  claim query's time is measured with `EXPLAIN ANALYZE` on 20,000 pending + 1M completed.
- **Floor under S2**: jobyard's one-job insert with no job system around it, one call and
  commit each, through pgbench (no Python), a bare psycopg 3 connection and a bare asyncpg
  connection: what the drivers themselves allow S2 to reach.

Each scenario runs 3 times, each time against a fresh database (and a fresh SQLite file), with
the systems' runs interleaved; tables give the median and the range (min to max).
"jobyard ÷ system" is jobyard's median divided by the other system's: above 1 jobyard is faster
in throughput tables, and below 1 jobyard is faster in latency tables.

**Reproduce**: `make bench` (about 20 minutes on 2 cores; not part of `make test`). It builds the
peers' own virtualenv `bench/.venv-peers` from the pinned `bench/requirements-peers.txt`, runs
`bench/run.py` with the main `.venv`'s python, writes every run's numbers and the conditions to
`bench/results/<timestamp>.json`, and renders this page with `bench/report.py`.
`make bench QUICK=1` is a 1-run, small-N pass for development (its report stays in
`bench/results/`); `make bench SYSTEMS=jobyard` re-measures jobyard alone (the peers' rows then
come from the newest full run, marked †); `SCENARIOS=S1,S6`, `RUNS=5` and `JOBYARD_REF=<git ref>`
(benchmark jobyard's `src/` as committed at that ref) narrow or vary a run. Without
`JOBYARD_REF`, jobyard runs from a copy of the working tree's `src/` taken when the run starts,
so edits made meanwhile cannot change it half-way. The PostgreSQL server
is `127.0.0.1:5432`, user `postgres` (`BENCH_PGHOST`, `BENCH_PGPORT`, `BENCH_PGUSER` override).
A scenario measured again on its own replaces the full run's rows with
`.venv/bin/python bench/report.py bench/results/<full>.json --merge bench/results/<later>.json`
(marked †, with the file named).
"""

HOW = """\
## How each system is run

- **jobyard**: the public API only (`open_store`, `Queue.enqueue_many` / `enqueue`,
  `Dispatcher` with an async executor), defaults everywhere except `Config(concurrency=...)` and,
  in S5, `Limits({"bench": 16})`. It runs from the main `.venv` on asyncio.
- **PgQueuer**: as its README shows: an asyncpg connection in `AsyncpgDriver` (asyncpg is its
  fastest driver), `Queries.enqueue` with lists for bulk and scalars for single enqueues, and a
  `PgQueuer` app whose `run()` waits on LISTEN/NOTIFY. The worker runs on uvloop, as `pgq run`
  does. Concurrency C is `max_concurrent_tasks=C` with `batch_size=C/2` (PgQueuer requires the
  cap to be at least twice the batch). S5 uses the entrypoint's `concurrency_limit=16`, which
  PgQueuer enforces in the database across workers.
- **Procrastinate**: an `App` on `PsycopgConnector` (pool `max_size` = concurrency + 2),
  `Task.batch_defer_async` for bulk and `defer_async` for single enqueues, and
  `run_worker_async(concurrency=C)` with LISTEN/NOTIFY (its default). It has no cluster-wide
  concurrency limit, so S5 is n/a. Its worker fetches one job per query.
- All three use psycopg 3 (jobyard, Procrastinate) or asyncpg (PgQueuer) against the same server;
  the peers live in their own virtualenv. Before every drain and latency run the orchestrator
  runs `ANALYZE` and `CHECKPOINT` on the fresh database, the same for every system: this server runs
  with autovacuum off, and without statistics the planner picks poor plans for freshly filled
  tables (Procrastinate's fetch ran ten times slower in a trial without it). S6's history is
  inserted with SQL `generate_series` in each system's own schema (jobyard: `completed` rows with
  `finished_at` an hour ago, inside the retention period; PgQueuer: `successful` rows in
  `pgqueuer_log`, since a finished PgQueuer job leaves no row in `pgqueuer`, and its id sequence
  moved past them; Procrastinate: `succeeded` rows in `procrastinate_jobs`, without their events),
  followed by `VACUUM ANALYZE`.
"""

NOTES = """\
### What these numbers do not show

- **Noise.** The machine has 2 CPUs, shared with PostgreSQL, the orchestrator's polling
  connection and, here, other work; each worker competes with the database for the same cores.
  Differences under about 15% between systems, or between runs, are within what repeating the
  suite moves. The load average before and after is in the conditions above.
- **A no-op job measures overhead only.** Real jobs do I/O and take milliseconds to minutes;
  then the queue's overhead per job matters less and concurrency, retries, timeouts and
  durability matter more. None of the systems is asked to retry, time out or fail a job here.
- **Not like for like in every respect.** Each system is run its recommended way, which differs:
  PgQueuer's worker uses uvloop and one connection; Procrastinate fetches one job per query and
  records events through triggers; jobyard claims up to `concurrency` jobs per query, records
  results in fenced batches and keeps a heartbeat and a leader lease. Their guarantees differ too
  (see [guarantees](guarantees.md)): jobyard's limits, fencing and rescue cost round trips that a
  benchmark of no-op jobs shows only as cost.
- **One machine, one server, defaults.** PostgreSQL runs with its defaults (128 MB of
  shared_buffers, synchronous_commit on, autovacuum off on this server); tuned servers, faster
  disks, more cores or a network between worker and database would change the picture, and most
  likely the ratios too.
- **History without pruning.** In S6 the seeded history is younger than jobyard's retention, so
  no pruning runs during the measurement; at steady state the leader's pruning adds some load.
- The pgbench baseline has no Python, no job and no bookkeeping (heartbeats, listener): it is an
  upper bound for jobyard's SQL on this server, not a target a Python worker can reach.
"""


def render(data: dict[str, Any], borrowed: list[str]) -> str:
    parts = [INTRO]
    if data.get("quick"):
        parts.append(
            "> **Quick run** (1 run per scenario, small N): for checking the suite, not for "
            "quoting.\n"
        )
    if borrowed:
        parts.append(
            "> † Not measured in this run, or measured again on its own: "
            + "; ".join(borrowed)
            + ".\n"
        )
    parts.append("## Conditions\n\n" + conditions_section(data) + "\n")
    parts.append(HOW)
    sz = data["sizes"]
    parts.append("## Results\n")
    parts.append(
        f"### S1 drain: {sz['drain_n']:,} jobs, one worker of concurrency 16\n\n"
        + throughput_table(data, "S1")
        + "\n\nBulk enqueue of the same jobs, 1,000 per call:\n\n"
        + enqueue_table(data)
        + "\n"
    )
    parts.append(
        f"### S2 single enqueue: {sz['single_n']:,} enqueues, one call and transaction each\n\n"
        + throughput_table(data, "S2")
        + "\n"
        + floor_section(data)
    )
    parts.append(
        f"### S3 latency: {sz['latency_n']:,} jobs at {sz['latency_rate']:.0f}/s to an idle "
        "worker, from another process\n\n"
        + latency_table(data, "S3", PG_SYSTEMS)
        + "\n\nEnqueue-to-start, in milliseconds: median of the runs' percentiles, with their "
        "range.\n" + latency_floor_section(data)
    )
    parts.append(
        "### S4 two worker processes of concurrency 8\n\n"
        + throughput_table(
            data,
            "S4",
            extra=lambda system, good: [
                ratio(
                    med([r["jobs_per_s"] for r in good]),
                    med([r["jobs_per_s"] for r in ok(records(data, "S1", system))]),
                )
            ],
            extra_header=["S4 ÷ S1"],
        )
        + "\n"
    )
    parts.append(
        "### S5 cluster-wide limit of 16 on the job type\n\n"
        + throughput_table(data, "S5", extra=s5_extra(data), extra_header=["S5 ÷ S1"])
        + '\n\njobyard: `Limits({"bench": 16})` (an advisory lock serializes the claims of a '
        "limited type); PgQueuer: `entrypoint(..., concurrency_limit=16)`; Procrastinate has "
        "none.\n"
    )
    parts.append(
        f"### S6 scale: S1 after {sz['history_n']:,} completed jobs\n\n"
        + throughput_table(
            data,
            "S6",
            extra=s6_extra(data),
            extra_header=["S6 ÷ S1", "claim ms, S1", "claim ms, S6"],
        )
        + "\n\nClaim ms: median `Execution Time` of 5 `EXPLAIN ANALYZE` runs (each rolled back) "
        "of the statement the worker uses to take work, on the 20,000-job backlog before the "
        "worker starts: jobyard's claim with no results to record (16 jobs; `claim_jobs`, the "
        "statement its cycle sends when it has no results and no limited type), PgQueuer's "
        "dequeue (a batch of 8, with its log insert), Procrastinate's "
        "`procrastinate_fetch_job_v2` (one job; the time is the whole plpgsql call).\n"
    )
    parts.append(
        "### jobyard on SQLite\n\n"
        "The embedded store (`synchronous=FULL`, its default, WAL), a fresh file per run, the "
        "same scenarios and N; compared with jobyard on PostgreSQL in the same run.\n\n"
        + sqlite_section(data)
        + "\n"
    )
    pgb, best = pgbench_section(data)
    parts.append(
        "### Physical limit: pgbench on jobyard's SQL\n\n"
        "`pgbench -n -M prepared -c N -j 2 -T seconds` runs jobyard's own dispatch cycle, the "
        "`complete_and_claim` statement taken at run time from "
        "`src/jobyard/store/postgres/queries.sql`, with no Python in between: each cycle "
        "completes the 16 jobs the previous one claimed (kept in a pgbench variable) and claims "
        "the next 16, with the generic plan the engine's claim connection uses "
        "(`PGOPTIONS=-c plan_cache_mode=force_generic_plan`). Two variants, one script each: "
        "[`statement`](../bench/pgbench/cycle.sql), one autocommit statement with a "
        "synchronous commit, as jobyard sends it by default; and "
        "[`statement-async`](../bench/pgbench/cycle_async.sql), the same in a transaction "
        "with `SET LOCAL synchronous_commit = off`, as with jobyard's opt-in fast transitions. "
        "The variant matching the benchmarked jobyard, read from its store's source, is marked. "
        "A jobyard schema starts "
        "with a 20,000-job backlog, refilled by `bench/pgbench/refill.sql` (weight 1 against 10, "
        "20% more jobs than the claims take); jobs/s counts the rows completed.\n\n" + pgb + "\n"
    )
    parts.append("### Memory\n\n" + memory_section(data) + "\n")
    parts.append("## Notes\n")
    obs = observations(data, best)
    if obs:
        parts.append("### Observations from this run\n\n" + "\n".join(f"- {o}" for o in obs) + "\n")
    parts.append(NOTES)
    parts.append(
        f"\n<!-- Generated by bench/report.py from bench/results/{data['_file']}; "
        "edit the generator, not this file. -->\n"
    )
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render docs/benchmarks.md from results JSON.")
    parser.add_argument("results", nargs="?", help="results file (default: the newest)")
    parser.add_argument(
        "--merge",
        nargs="*",
        default=[],
        help="later results files whose records replace this one's for the same scenario and "
        "system (a scenario re-measured on its own)",
    )
    parser.add_argument("--out", help="where to write (default: docs/benchmarks.md, or "
                        "bench/results/<name>.md for a quick run)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.results:
        path = Path(args.results)
    else:
        candidates = sorted(RESULTS.glob("*.json"))
        if not candidates:
            parser.error("no results in bench/results/: run `make bench` first")
        path = candidates[-1]
    data = load(path)
    borrowed = merge(data, args.merge)
    if not data.get("quick"):
        borrowed += fill_missing(data)
    if args.out:
        out = Path(args.out)
    elif data.get("quick"):
        out = path.with_suffix(".md")
    else:
        out = DOC
    out.write_text(render(data, borrowed), encoding="utf-8")
    print(f"report written to {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
