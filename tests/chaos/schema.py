"""The evidence tables the harness creates next to jobyard's own, and the payload model.

Every timestamp in them is the database's clock (`clock_timestamp()`), which is also the host
clock of the harness (same machine), so the fault log can use `time.time()`. A node under
faketime never stamps anything with its own clock: it sends monotonic *differences*, which the
database turns into timestamps.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict

EVIDENCE_DDL: Final = """
CREATE TABLE IF NOT EXISTS chaos_evidence (
    job        bigint      NOT NULL,
    attempt    integer     NOT NULL,
    node       text        NOT NULL,
    pid        integer     NOT NULL,
    type       text        NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    outcome    text,
    PRIMARY KEY (job, attempt, node)
);
CREATE TABLE IF NOT EXISTS chaos_terms (
    id          bigserial   PRIMARY KEY,
    node        text        NOT NULL,
    pid         integer     NOT NULL,
    elected_at  timestamptz,
    expires_at  timestamptz,
    seen_at     timestamptz NOT NULL,
    trust_until timestamptz NOT NULL,
    kind        text        NOT NULL  -- term (won or renewed), resign, stepdown
);
CREATE TABLE IF NOT EXISTS chaos_maint (
    id        bigserial   PRIMARY KEY,
    node      text        NOT NULL,
    pid       integer     NOT NULL,
    what      text        NOT NULL,
    at        timestamptz NOT NULL,
    ended_at  timestamptz,
    believed  boolean     NOT NULL,
    detail    jsonb
);
CREATE TABLE IF NOT EXISTS chaos_applied (
    job     bigint      NOT NULL,
    attempt integer     NOT NULL,
    node    text        NOT NULL,
    outcome text        NOT NULL,
    at      timestamptz NOT NULL,
    PRIMARY KEY (job, attempt, node, outcome)
);
CREATE TABLE IF NOT EXISTS chaos_nodes (
    node       text        PRIMARY KEY,
    pid        integer     NOT NULL,
    slot       integer     NOT NULL,
    started_at timestamptz NOT NULL,
    host_skew  float8      NOT NULL,
    faketime   text
);
"""

EVIDENCE_TABLES: Final = (
    "chaos_evidence",
    "chaos_terms",
    "chaos_maint",
    "chaos_applied",
    "chaos_nodes",
)


class TypedPayload(BaseModel):
    """The payload of the `typed` job type; a stored payload that does not fit is a poison pill."""

    model_config = ConfigDict(extra="forbid", strict=True)

    n: int
    label: str
