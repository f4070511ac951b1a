"""The floor under S2: a single-row enqueue with no job system around it.

Sends jobyard's own one-job insert (`insert_job` from src/jobyard/store/postgres/queries.sql,
without its NOTIFY), one statement and one synchronous commit per call, awaited one after
another from one connection, exactly as S2's producer does, through a bare driver:

    .venv/bin/python bench/floor.py --driver psycopg --dsn ... --n 5000
    bench/.venv-peers/bin/python bench/floor.py --driver asyncpg --dsn ... --n 5000

psycopg 3 is the driver jobyard uses; asyncpg, PgQueuer's. The statement is prepared (psycopg
after its first use, asyncpg always), the event loop is asyncio for psycopg and uvloop for
asyncpg, as each system's worker runs. Prints one JSON line: {"n", "seconds", "jobs_per_s"}.
No job system can enqueue faster than its driver can send this statement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

QUERIES = Path(__file__).resolve().parent.parent / "src/jobyard/store/postgres/queries.sql"
# The parameters of insert_job, in the order they become $1, $2, ... for asyncpg.
PARAMS = ("type", "payload", "priority", "max_attempts", "run_at", "now")


def insert_job() -> str:
    parts = re.split(r"^-- name: (\w+)\s*$", QUERIES.read_text(encoding="utf-8"), flags=re.M)
    queries = {name: sql.strip() for name, sql in zip(parts[1::2], parts[2::2], strict=True)}
    return queries["insert_job"]


def values(i: int) -> dict[str, Any]:
    return {
        "type": "bench",
        "payload": json.dumps({"i": i}),
        "priority": 0,
        "max_attempts": 3,
        "run_at": None,
        "now": None,
    }


async def with_psycopg(dsn: str, n: int) -> float:
    import psycopg

    sql = insert_job()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for i in range(20):  # warm: connection, prepared statement
            await (await conn.execute(sql, values(i), prepare=True)).fetchall()
        t0 = time.perf_counter()
        for i in range(n):
            await (await conn.execute(sql, values(i), prepare=True)).fetchall()
        return time.perf_counter() - t0


async def with_asyncpg(dsn: str, n: int) -> float:
    import asyncpg

    sql = insert_job()
    for number, name in enumerate(PARAMS, start=1):
        sql = sql.replace(f"%({name})s", f"${number}")
    conn = await asyncpg.connect(dsn)
    try:
        statement = await conn.prepare(sql)
        for i in range(20):
            await statement.fetch(*values(i).values())
        t0 = time.perf_counter()
        for i in range(n):
            await statement.fetch(*values(i).values())
        return time.perf_counter() - t0
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=("psycopg", "asyncpg"), required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    if args.driver == "psycopg":
        seconds = asyncio.run(with_psycopg(args.dsn, args.n))
    else:
        import uvloop

        seconds = uvloop.run(with_asyncpg(args.dsn, args.n))
    print(json.dumps({"n": args.n, "seconds": seconds, "jobs_per_s": args.n / seconds}))


if __name__ == "__main__":
    main()
