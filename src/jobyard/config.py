"""Config: the four durations that pace a cluster, plus what a node needs to run.

Durations accept seconds (an int or float, or a numeric string from the environment) or a
`timedelta`. Every value is checked when the Config is built, and a bad one raises `ConfigError`
naming the setting, so a typo fails at start rather than in the middle of the night.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobyard.model import ConfigError

__all__ = ["DEFAULT_DATABASE_URL", "Config"]

DEFAULT_DATABASE_URL = "sqlite:///jobyard.db"
MAX_DURATION = timedelta(days=36500)

# The settings `Config.from_env` took from the environment, so errors name JOBYARD_<SETTING>.
_ENV_FIELDS: ContextVar[frozenset[str]] = ContextVar("jobyard_env_fields", default=frozenset())


def _as_timedelta(value: Any) -> Any:
    """Accept seconds as a number or numeric string; leave everything else to pydantic."""
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or a timedelta, not a boolean")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value  # pydantic reports it (it may still be an ISO 8601 duration)
    if isinstance(value, int | float):
        try:
            return timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise ValueError(f"{value} seconds is not a usable duration") from None
    return value


class Config(BaseModel):
    """How one jobyard node behaves.

    The first four fields pace the cluster: how often nodes poll, heartbeat and renew the
    leader lease, and how long a job may run. Build it directly, or with `Config.from_env()` to read
    `JOBYARD_*` environment variables (for example `JOBYARD_JOB_POLL_INTERVAL=0.5`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_poll_interval: timedelta = Field(
        default=timedelta(seconds=1),
        description="How often an idle node looks for due jobs when no notification arrives.",
    )
    heartbeat_interval: timedelta = Field(
        default=timedelta(seconds=2),
        description="How often a node renews its own liveness and, if it leads, the leader lease.",
    )
    leader_lease_duration: timedelta = Field(
        default=timedelta(seconds=10),
        description="How long the leader lease and a node's liveness last without renewal.",
    )
    job_timeout: timedelta = Field(
        default=timedelta(hours=1),
        description="Longest a job may run before it is cancelled and recorded as timed out.",
    )
    job_timeouts: dict[str, timedelta] = Field(
        default_factory=dict,
        description="Per-type overrides of job_timeout.",
    )
    concurrency: int = Field(default=16, description="Most jobs this node runs at once.")
    database_url: str = Field(default=DEFAULT_DATABASE_URL)
    node_id: str | None = Field(
        default=None,
        description="Name of this node; a unique one per process is generated when not given.",
    )
    max_attempts: int = Field(default=3, description="Default attempts per job (1 = no retry).")
    retry_backoff: timedelta = Field(
        default=timedelta(seconds=1),
        description="Delay before the first retry; each later retry doubles it, with jitter.",
    )
    retry_backoff_max: timedelta = Field(default=timedelta(hours=1))
    shutdown_grace_period: timedelta = Field(
        default=timedelta(seconds=10),
        description="On stop, how long running jobs may finish before they are cancelled.",
    )
    max_payload_bytes: int = Field(
        default=1024 * 1024, description="Largest accepted payload, as UTF-8 JSON."
    )
    data_dir: Path = Field(
        default=Path("jobyard-data"),
        description="Where workspaces and their sessions are materialized.",
    )
    templates_dir: Path | None = Field(
        default=None,
        description="Where workspace templates are looked up (default: data_dir/templates).",
    )
    listen: bool = Field(
        default=True,
        description="Wake on enqueue notifications (PostgreSQL LISTEN, SQLite change counter). "
        "False is poll-only mode, for connection poolers that break LISTEN.",
    )
    retention_completed: timedelta = Field(
        default=timedelta(days=1), description="How long completed jobs are kept."
    )
    retention_cancelled: timedelta = Field(
        default=timedelta(days=1), description="How long cancelled jobs are kept."
    )
    retention_failed: timedelta = Field(
        default=timedelta(days=7), description="How long failed jobs are kept."
    )

    @field_validator(
        "job_poll_interval",
        "heartbeat_interval",
        "leader_lease_duration",
        "job_timeout",
        "retry_backoff",
        "retry_backoff_max",
        "shutdown_grace_period",
        "retention_completed",
        "retention_cancelled",
        "retention_failed",
        mode="before",
    )
    @classmethod
    def _seconds_to_timedelta(cls, value: Any) -> Any:
        return _as_timedelta(value)

    @field_validator("job_timeouts", mode="before")
    @classmethod
    def _timeouts_to_timedelta(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: _as_timedelta(v) for k, v in value.items()}
        return value

    @field_validator(
        "job_poll_interval",
        "heartbeat_interval",
        "leader_lease_duration",
        "job_timeout",
        "retry_backoff",
        "retry_backoff_max",
        "retention_completed",
        "retention_cancelled",
        "retention_failed",
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"must be a positive duration, got {value.total_seconds()} seconds")
        return value

    @field_validator(
        "job_poll_interval",
        "heartbeat_interval",
        "leader_lease_duration",
        "job_timeout",
        "retry_backoff",
        "retry_backoff_max",
        "shutdown_grace_period",
        "retention_completed",
        "retention_cancelled",
        "retention_failed",
    )
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        # Every duration is added to or taken from "now" somewhere; 100 years keeps that
        # arithmetic inside what dates can hold.
        if value > MAX_DURATION:
            raise ValueError(f"must be at most {MAX_DURATION.days} days")
        return value

    @field_validator("shutdown_grace_period")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @field_validator("job_timeouts")
    @classmethod
    def _timeouts_positive(cls, value: dict[str, timedelta]) -> dict[str, timedelta]:
        for job_type, timeout in value.items():
            if not timedelta(0) < timeout <= MAX_DURATION:
                raise ValueError(
                    f"timeout for {job_type!r} must be a positive duration of at most "
                    f"{MAX_DURATION.days} days"
                )
        return value

    @field_validator("concurrency", "max_attempts", "max_payload_bytes")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("max_attempts")
    @classmethod
    def _attempts_cap(cls, value: int) -> int:
        if value > 1000:
            raise ValueError(f"must be at most 1000, got {value}")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError(
                "must start with sqlite:/// or postgresql:// (for example sqlite:///jobyard.db)"
            )
        return value

    @field_validator("node_id")
    @classmethod
    def _node_id_shape(cls, value: str | None) -> str | None:
        if value is not None and not (1 <= len(value) <= 200):
            raise ValueError("must be 1 to 200 characters")
        return value

    @model_validator(mode="after")
    def _lease_outlives_heartbeat(self) -> Self:
        # A lease renewed every heartbeat must survive at least one missed renewal; otherwise a
        # single slow round trip costs the cluster its leader.
        if self.leader_lease_duration < 2 * self.heartbeat_interval:
            raise ValueError(
                "leader_lease_duration must be at least twice heartbeat_interval "
                f"(got {self.leader_lease_duration.total_seconds()}s and "
                f"{self.heartbeat_interval.total_seconds()}s)"
            )
        return self

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, from_env=_ENV_FIELDS.get())) from None

    @property
    def templates_path(self) -> Path:
        return self.templates_dir if self.templates_dir is not None else self.data_dir / "templates"

    def timeout_for(self, job_type: str) -> timedelta:
        """The timeout that applies to jobs of `job_type`."""
        return self.job_timeouts.get(job_type, self.job_timeout)

    @classmethod
    def from_env(cls, **overrides: Any) -> Config:
        """Build a Config from `JOBYARD_*` variables; keyword arguments win over the environment.

        `JOBYARD_JOB_TIMEOUTS` takes JSON, for example `{"email": 30}`.
        """
        try:
            values = _EnvSettings().model_dump(exclude_unset=True)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, from_env=set(_EnvSettings.model_fields))) from None
        token = _ENV_FIELDS.set(frozenset(set(values) - set(overrides)))
        try:
            return cls(**{**values, **overrides})
        finally:
            _ENV_FIELDS.reset(token)


def _describe(exc: ValidationError, from_env: set[str] | frozenset[str] = frozenset()) -> str:
    """One line naming each bad setting, as the user spelled it (`JOBYARD_X` if from the env)."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "config"
        rest = ".".join(str(p) for p in error["loc"][1:])
        name = f"JOBYARD_{field.upper()} ({field})" if field in from_env else field
        if rest:
            name = f"{name}.{rest}"
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:
            # A rule across settings: name each setting as the user spelled it.
            for setting in sorted(from_env, key=len, reverse=True):
                message = message.replace(setting, f"JOBYARD_{setting.upper()}")
            parts.append(message)
            continue
        parts.append(f"{name}: {message}")
    return "invalid jobyard configuration: " + "; ".join(parts)


class _EnvSettings(BaseSettings):
    """Reads the raw `JOBYARD_*` strings; `Config` does the parsing and checking."""

    model_config = SettingsConfigDict(env_prefix="JOBYARD_", extra="ignore")

    job_poll_interval: str | None = None
    heartbeat_interval: str | None = None
    leader_lease_duration: str | None = None
    job_timeout: str | None = None
    job_timeouts: dict[str, float] | None = None
    concurrency: int | None = None
    database_url: str | None = None
    node_id: str | None = None
    max_attempts: int | None = None
    retry_backoff: str | None = None
    retry_backoff_max: str | None = None
    shutdown_grace_period: str | None = None
    max_payload_bytes: int | None = None
    listen: bool | None = None
    data_dir: str | None = None
    templates_dir: str | None = None
    retention_completed: str | None = None
    retention_cancelled: str | None = None
    retention_failed: str | None = None
