"""Config and Limits: defaults, duration parsing, validation, the environment, per-type values."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobyard import ConfigError, Limits
from jobyard.config import DEFAULT_DATABASE_URL, Config

DURATION_FIELDS = [
    "job_poll_interval",
    "heartbeat_interval",
    "leader_lease_duration",
    "job_timeout",
    "retry_backoff",
    "retry_backoff_max",
    "shutdown_grace_period",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No JOBYARD_* variable from the outer environment may leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("JOBYARD_"):
            monkeypatch.delenv(name)


# -- defaults ----------------------------------------------------------------------------------


def test_defaults_match_the_documented_values() -> None:
    config = Config()

    assert config.job_poll_interval == timedelta(seconds=1)
    assert config.heartbeat_interval == timedelta(seconds=2)
    assert config.leader_lease_duration == timedelta(seconds=10)
    assert config.job_timeout == timedelta(hours=1)
    assert config.job_timeouts == {}
    assert config.concurrency == 16
    assert config.database_url == DEFAULT_DATABASE_URL == "sqlite:///jobyard.db"
    assert config.node_id is None
    assert config.max_attempts == 3
    assert config.retry_backoff == timedelta(seconds=1)
    assert config.retry_backoff_max == timedelta(hours=1)
    assert config.shutdown_grace_period == timedelta(seconds=10)
    assert config.max_payload_bytes == 1024 * 1024


def test_config_is_frozen() -> None:
    config = Config()

    with pytest.raises(ValueError, match="frozen"):
        config.concurrency = 3  # type: ignore[misc]
    assert config.concurrency == 16


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", DURATION_FIELDS)
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (30, timedelta(seconds=30)),
        (30.5, timedelta(seconds=30.5)),
        ("30", timedelta(seconds=30)),
        ("30.25", timedelta(seconds=30.25)),
        (timedelta(seconds=30), timedelta(seconds=30)),
        (timedelta(minutes=2), timedelta(minutes=2)),
    ],
)
def test_durations_accept_seconds_numeric_strings_and_timedelta(
    field: str, given: Any, expected: timedelta
) -> None:
    # Keep the lease valid (>= 2x heartbeat) whatever field is under test.
    base: dict[str, Any] = {"heartbeat_interval": 1, "leader_lease_duration": 600}
    base[field] = given

    value = getattr(Config(**base), field)

    assert isinstance(value, timedelta)
    assert value == expected


def test_job_timeouts_values_become_timedeltas() -> None:
    config = Config(job_timeouts={"email": 30, "report": "90.5", "video": timedelta(hours=2)})

    assert config.job_timeouts == {
        "email": timedelta(seconds=30),
        "report": timedelta(seconds=90.5),
        "video": timedelta(hours=2),
    }
    assert all(isinstance(v, timedelta) for v in config.job_timeouts.values())


def test_shutdown_grace_period_may_be_zero() -> None:
    assert Config(shutdown_grace_period=0).shutdown_grace_period == timedelta(0)


# -- invalid values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [f for f in DURATION_FIELDS if f != "shutdown_grace_period"],
)
@pytest.mark.parametrize("bad", [0, -1, -0.5, "0", "-3", timedelta(0), timedelta(seconds=-1)])
def test_zero_or_negative_durations_raise_config_error_naming_the_setting(
    field: str, bad: Any
) -> None:
    with pytest.raises(ConfigError, match=field):
        Config(**{field: bad})


def test_negative_shutdown_grace_period_raises_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="shutdown_grace_period"):
        Config(shutdown_grace_period=-1)


@pytest.mark.parametrize("bad", ["soon", "", "1s", [1]])
def test_non_numeric_duration_raises_config_error_naming_the_setting(bad: Any) -> None:
    with pytest.raises(ConfigError, match="job_poll_interval"):
        Config(job_poll_interval=bad)


def test_bool_duration_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="job_timeout"):
        Config(job_timeout=True)


@pytest.mark.parametrize("bad", [float("inf"), 10**20])
def test_unrepresentable_duration_raises_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match="job_timeout"):
        Config(job_timeout=bad)


def test_nan_duration_raises_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="job_timeout"):
        Config(job_timeout=float("nan"))


def test_non_positive_per_type_timeout_raises_config_error_naming_the_type() -> None:
    with pytest.raises(ConfigError, match="job_timeouts") as info:
        Config(job_timeouts={"email": 0})
    assert "email" in str(info.value)


@pytest.mark.parametrize("field", ["concurrency", "max_attempts", "max_payload_bytes"])
@pytest.mark.parametrize("bad", [0, -1])
def test_counts_below_one_raise_config_error_naming_the_setting(field: str, bad: int) -> None:
    with pytest.raises(ConfigError, match=field):
        Config(**{field: bad})


def test_concurrency_must_be_a_whole_number() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        Config(concurrency=2.5)


@pytest.mark.parametrize(
    "url",
    ["mysql://localhost/db", "jobyard.db", "", "sqlite:jobyard.db", "http://x", "SQLITE"],
)
def test_unknown_database_url_scheme_raises_config_error_naming_it(url: str) -> None:
    with pytest.raises(ConfigError, match="database_url"):
        Config(database_url=url)


@pytest.mark.parametrize(
    "url",
    ["sqlite:///jobyard.db", "sqlite:////tmp/j.db", "postgresql://u@h/db", "postgres://u@h/db"],
)
def test_known_database_url_schemes_are_accepted(url: str) -> None:
    assert Config(database_url=url).database_url == url


@pytest.mark.parametrize("node_id", ["", "x" * 201])
def test_node_id_outside_1_to_200_chars_raises_config_error(node_id: str) -> None:
    with pytest.raises(ConfigError, match="node_id"):
        Config(node_id=node_id)


def test_lease_shorter_than_twice_heartbeat_raises_config_error_naming_both() -> None:
    with pytest.raises(ConfigError) as info:
        Config(heartbeat_interval=2, leader_lease_duration=3.9)
    message = str(info.value)
    assert "leader_lease_duration" in message
    assert "heartbeat_interval" in message


def test_lease_of_exactly_twice_heartbeat_is_accepted() -> None:
    config = Config(heartbeat_interval=2, leader_lease_duration=4)

    assert config.leader_lease_duration == 2 * config.heartbeat_interval


def test_unknown_key_raises_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="poll_intervall"):
        Config(poll_intervall=1)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Config(concurrency=0)


def test_every_bad_setting_is_named_in_one_error() -> None:
    with pytest.raises(ConfigError) as info:
        Config(concurrency=0, database_url="mysql://x")
    assert "concurrency" in str(info.value)
    assert "database_url" in str(info.value)


# -- from_env ----------------------------------------------------------------------------------


def test_from_env_without_variables_gives_defaults() -> None:
    assert Config.from_env() == Config()


def test_from_env_reads_jobyard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBYARD_JOB_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("JOBYARD_HEARTBEAT_INTERVAL", "3")
    monkeypatch.setenv("JOBYARD_LEADER_LEASE_DURATION", "15")
    monkeypatch.setenv("JOBYARD_JOB_TIMEOUT", "120")
    monkeypatch.setenv("JOBYARD_CONCURRENCY", "4")
    monkeypatch.setenv("JOBYARD_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("JOBYARD_NODE_ID", "node-a")
    monkeypatch.setenv("JOBYARD_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("JOBYARD_RETRY_BACKOFF", "2")
    monkeypatch.setenv("JOBYARD_RETRY_BACKOFF_MAX", "60")
    monkeypatch.setenv("JOBYARD_SHUTDOWN_GRACE_PERIOD", "0")
    monkeypatch.setenv("JOBYARD_MAX_PAYLOAD_BYTES", "2048")

    config = Config.from_env()

    assert config.job_poll_interval == timedelta(seconds=0.5)
    assert config.heartbeat_interval == timedelta(seconds=3)
    assert config.leader_lease_duration == timedelta(seconds=15)
    assert config.job_timeout == timedelta(seconds=120)
    assert config.concurrency == 4
    assert config.database_url == "postgresql://u@h/db"
    assert config.node_id == "node-a"
    assert config.max_attempts == 7
    assert config.retry_backoff == timedelta(seconds=2)
    assert config.retry_backoff_max == timedelta(seconds=60)
    assert config.shutdown_grace_period == timedelta(0)
    assert config.max_payload_bytes == 2048


def test_from_env_reads_job_timeouts_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBYARD_JOB_TIMEOUTS", '{"email": 30, "report": 2.5}')

    config = Config.from_env()

    assert config.job_timeouts == {
        "email": timedelta(seconds=30),
        "report": timedelta(seconds=2.5),
    }
    assert config.timeout_for("email") == timedelta(seconds=30)


def test_from_env_keyword_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBYARD_CONCURRENCY", "4")
    monkeypatch.setenv("JOBYARD_JOB_TIMEOUT", "120")
    monkeypatch.setenv("JOBYARD_MAX_ATTEMPTS", "7")

    config = Config.from_env(concurrency=9, job_timeout=timedelta(seconds=5))

    assert config.concurrency == 9
    assert config.job_timeout == timedelta(seconds=5)
    assert config.max_attempts == 7  # not overridden: the environment still applies


def test_from_env_override_can_fix_a_bad_environment_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBYARD_JOB_POLL_INTERVAL", "-1")

    assert Config.from_env(job_poll_interval=2).job_poll_interval == timedelta(seconds=2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONCURRENCY", "many"),
        ("MAX_ATTEMPTS", "3.5"),
        ("MAX_PAYLOAD_BYTES", "1MB"),
        ("JOB_TIMEOUTS", "{not json"),
        ("JOB_TIMEOUTS", '{"email": "soon"}'),
    ],
)
def test_from_env_unparseable_value_raises_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"JOBYARD_{name}", value)

    with pytest.raises(ConfigError, match=f"JOBYARD_{name}"):
        Config.from_env()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JOB_POLL_INTERVAL", "-1"),
        ("JOB_TIMEOUT", "soon"),
        ("CONCURRENCY", "0"),
        ("DATABASE_URL", "mysql://x"),
        ("JOB_TIMEOUTS", '{"email": 0}'),
    ],
)
def test_from_env_invalid_value_raises_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"JOBYARD_{name}", value)

    with pytest.raises(ConfigError, match=f"JOBYARD_{name}"):
        Config.from_env()


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("JOB_POLL_INTERVAL", "-1", "job_poll_interval"),
        ("CONCURRENCY", "0", "concurrency"),
        ("DATABASE_URL", "mysql://x", "database_url"),
    ],
)
def test_from_env_invalid_value_raises_config_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    monkeypatch.setenv(f"JOBYARD_{name}", value)

    with pytest.raises(ConfigError, match=field):
        Config.from_env()


def test_from_env_ignores_unrelated_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCURRENCY", "0")
    monkeypatch.setenv("JOBYARD_NOT_A_SETTING", "x")

    assert Config.from_env().concurrency == 16


# -- timeout_for -------------------------------------------------------------------------------


def test_timeout_for_uses_per_type_override() -> None:
    config = Config(job_timeout=600, job_timeouts={"email": 30})

    assert config.timeout_for("email") == timedelta(seconds=30)


def test_timeout_for_falls_back_to_job_timeout() -> None:
    config = Config(job_timeout=600, job_timeouts={"email": 30})

    assert config.timeout_for("report") == timedelta(seconds=600)
    assert Config().timeout_for("workspace_init") == timedelta(hours=1)


# -- Limits ------------------------------------------------------------------------------------


def test_limits_limit_nothing_by_default() -> None:
    limits = Limits()

    assert limits.limits == {}
    assert limits.limit_for("workspace_init") is None
    assert limits.default is None


def test_limits_name_the_types_they_limit() -> None:
    limits = Limits({"email": 3})

    assert limits.limits == {"email": 3}
    assert limits.limit_for("email") == 3


def test_the_workspace_platform_brings_its_own_limits_which_can_be_overridden(
    tmp_path: Path,
) -> None:
    from jobyard.workspaces import WORKSPACE_LIMITS, build_workspace_runtime

    assert WORKSPACE_LIMITS == {"workspace_init": 5, "session_init": 10}
    config = Config(database_url=f"sqlite:///{tmp_path / 'j.db'}", data_dir=tmp_path)
    default = build_workspace_runtime(config)
    assert default.limits.limits == {"workspace_init": 5, "session_init": 10}
    tuned = build_workspace_runtime(config, limits=Limits({"workspace_init": 1, "email": 3}))
    assert tuned.limits.limits == {"workspace_init": 1, "session_init": 10, "email": 3}


def test_unnamed_type_has_no_limit_by_default() -> None:
    assert Limits().limit_for("email") is None
    assert Limits({"email": 3}).limit_for("report") is None


def test_unnamed_type_gets_the_given_default() -> None:
    limits = Limits({"email": 3}, default=2)

    assert limits.default == 2
    assert limits.limit_for("report") == 2
    assert limits.limit_for("email") == 3


def test_limits_mapping_is_a_copy() -> None:
    limits = Limits({"email": 3})
    snapshot = limits.limits
    snapshot["email"] = 99  # type: ignore[index]

    assert limits.limit_for("email") == 3


def test_limits_do_not_alias_the_given_mapping() -> None:
    given = {"email": 3}
    limits = Limits(given)
    given["email"] = 100

    assert limits.limit_for("email") == 3


@pytest.mark.parametrize("bad", [0, -1, "3", True, False, 2.0, None])
def test_invalid_limit_raises_config_error_naming_the_type(bad: Any) -> None:
    with pytest.raises(ConfigError, match="email"):
        Limits({"email": bad})


@pytest.mark.parametrize("bad", [0, -1, "3", True, 1.5])
def test_invalid_default_limit_raises_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match="default"):
        Limits(default=bad)


def test_invalid_override_of_a_seed_limit_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="session_init"):
        Limits({"session_init": 0})
