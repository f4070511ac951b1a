"""`jobyard status`: the leader, the live nodes and, per job type, counts, limit and who
serves it, read through `JobAdmin` with the limits the service's nodes enforce. `--json` has the
shape of the API's `GET /api/status`."""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from rich.table import Table

from jobyard.cli import service
from jobyard.cli.context import load_config, opened_admin
from jobyard.cli.errors import cli_errors
from jobyard.cli.output import JsonOption, echo_json, escaped, stdout_console, when
from jobyard.cli.waiting import NO_WORKER_HINT
from jobyard.config import Config
from jobyard.model import JobStatus
from jobyard.status import ClusterStatus


def _status_json(st: ClusterStatus) -> dict[str, Any]:
    """The same shape as the API's `GET /api/status`."""
    leader = None
    if st.leader is not None:
        leader = {
            "node_id": st.leader.leader_id,
            "elected_at": st.leader.elected_at,
            "expires_at": st.leader.expires_at,
        }
    return {
        "leader": leader,
        "nodes": [
            {
                "node_id": n.node_id,
                "hostname": n.hostname,
                "pid": n.pid,
                "job_types": list(n.job_types),
                "concurrency": n.concurrency,
                "started_at": n.started_at,
                "heartbeat_at": n.heartbeat_at,
                "expires_at": n.expires_at,
            }
            for n in st.nodes
        ],
        "types": [
            {
                "type": t.type,
                "counts": {s.value: t.counts.get(s, 0) for s in JobStatus},
                "pending": t.pending,
                "running": t.running,
                "limit": t.limit,
                "served": t.served,
            }
            for t in st.types
        ],
        "unserved": st.unserved,
    }


@cli_errors
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the leader, the live nodes and, per job type, counts, limit and who serves it.

    A type with pending jobs that no live node serves is flagged: those jobs wait until a node
    that has its executor starts.
    """
    st = asyncio.run(_status(load_config(ctx)))
    if as_json:
        echo_json(_status_json(st))
        return
    out = stdout_console()
    if st.leader is None:
        out.print("leader: [yellow]none[/] (no node holds the lease)")
    else:
        out.print(
            f"leader: [bold]{escaped(st.leader.leader_id)}[/], term since "
            f"{when(st.leader.elected_at)}, lease until {when(st.leader.expires_at)}"
        )
    if st.nodes:
        nodes = Table(title=f"live nodes ({len(st.nodes)})", title_justify="left")
        for column in ("node", "host", "pid", "types", "concurrency", "heartbeat"):
            nodes.add_column(column)
        for n in st.nodes:
            nodes.add_row(
                escaped(n.node_id),
                escaped(n.hostname),
                str(n.pid),
                escaped(", ".join(n.job_types)),
                str(n.concurrency),
                when(n.heartbeat_at),
            )
        out.print(nodes)
    else:
        out.print(f"live nodes: [yellow]none[/] ({NO_WORKER_HINT})")
    types = Table(title="job types", title_justify="left")
    types.add_column("type")
    for s in JobStatus:
        types.add_column(s.value, justify="right")
    types.add_column("limit", justify="right")
    types.add_column("served")
    for t in st.types:
        served = "yes" if t.served else ("[red]no[/]" if t.pending else "no")
        types.add_row(
            escaped(t.type),
            *(str(t.counts.get(s, 0)) for s in JobStatus),
            str(t.limit) if t.limit is not None else "-",
            served,
        )
    out.print(types)
    if st.unserved:
        out.print(
            f"[yellow]pending jobs of {escaped(', '.join(st.unserved))} wait: no live node "
            "serves them[/]"
        )


async def _status(config: Config) -> ClusterStatus:
    async with opened_admin(config, limits=service.limits()) as admin:
        return await admin.cluster_status()
