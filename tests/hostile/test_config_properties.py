"""Whatever an operator (or a broken deploy script) puts in `JOBYARD_*`, `Config.from_env`
either builds a valid Config or raises ConfigError naming the variable; never another error."""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobyard import Config, ConfigError, StoreError, open_store
from jobyard.dispatcher.maintenance import run_maintenance
from tests.hostile.helpers import StoreRunner

SETTINGS = sorted(Config.model_fields)
# The one rule that spans two settings; its message names the settings, not the variables.
LEASE_RULE = "leader_lease_duration must be at least twice heartbeat_interval"

# What the environment can carry: text without NUL, with no lone surrogates.
ENV_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats().map(repr),  # nan, inf, -0.0, 1e308, 5e-324 ...
    st.floats(allow_nan=False).map(lambda f: f"{f:e}"),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
ISO_DURATIONS = st.builds(
    "{}P{}{}".format,
    st.sampled_from(["", "-", "+"]),
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from(["D", "W", "Y", "M", "DT1S", "", "T"]),
)
JSON_MAPS = st.dictionaries(
    ENV_TEXT,
    st.none() | st.booleans() | st.floats() | st.integers() | ENV_TEXT,
    max_size=3,
).map(json.dumps)
ENV_VALUES = st.one_of(
    ENV_TEXT,
    NUMBERS,
    ISO_DURATIONS,
    JSON_MAPS,
    st.sampled_from(
        [
            "",
            " ",
            "true",
            "no",
            "null",
            "[]",
            "{",
            "sqlite://",
            "sqlite:///x.db",
            "postgresql://u@h/db",
            "mysql://x",
            "1_000",
            "\u0661\u0662",  # Arabic-Indic digits: float() reads them as 12
            "9" * 5000,
            "../../etc",
            "'; DROP TABLE jobyard_jobs; --",
        ]
    ),
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("JOBYARD_"):
            monkeypatch.delenv(name)


def env_name(setting: str) -> str:
    return f"JOBYARD_{setting.upper()}"


def test_every_setting_is_fuzzed() -> None:
    assert len(SETTINGS) >= 19
    assert {"job_timeouts", "database_url", "retention_failed", "listen"} <= set(SETTINGS)


@settings(max_examples=400, deadline=None, database=None)
@given(env=st.dictionaries(st.sampled_from(SETTINGS), ENV_VALUES, min_size=1, max_size=3))
@example(env={"job_timeouts": '{"a": 1e400}'})
@example(env={"job_timeouts": "{not json"})
@example(env={"concurrency": "9" * 5000})
@example(env={"job_timeout": "nan"})
@example(env={"heartbeat_interval": "1e308"})
@example(env={"retention_failed": "-inf"})
@example(env={"data_dir": "\n"})
def test_from_env_gives_a_config_or_a_config_error_naming_the_variable(
    env: dict[str, str],
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for setting, value in env.items():
            mp.setenv(env_name(setting), value)
        try:
            config = Config.from_env()
        except ConfigError as exc:
            message = str(exc)
            named = [s for s in env if env_name(s) in message]
            assert named, message  # every refusal names the variable it refuses
        else:
            assert isinstance(config, Config)
            assert config.leader_lease_duration >= 2 * config.heartbeat_interval
            assert 1 <= config.max_attempts <= 1000
            assert config.concurrency >= 1
            assert config.max_payload_bytes >= 1


def test_a_huge_heartbeat_interval_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBYARD_HEARTBEAT_INTERVAL", "P500000004D")
    with pytest.raises(ConfigError, match="JOBYARD_HEARTBEAT_INTERVAL"):
        Config.from_env()


def test_valid_values_from_the_environment_are_read_as_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A positive control for the property above: the fuzzed variables are really read."""
    monkeypatch.setenv("JOBYARD_JOB_TIMEOUTS", '{"a": 1.5}')
    monkeypatch.setenv("JOBYARD_RETENTION_FAILED", "60")
    monkeypatch.setenv("JOBYARD_LISTEN", "false")
    config = Config.from_env()
    assert config.job_timeouts == {"a": timedelta(seconds=1.5)}
    assert config.retention_failed == timedelta(seconds=60)
    assert config.listen is False


def test_lease_rule_names_the_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBYARD_HEARTBEAT_INTERVAL", "30")
    with pytest.raises(ConfigError) as refused:
        Config.from_env()
    assert re.search(r"JOBYARD_(HEARTBEAT_INTERVAL|LEADER_LEASE_DURATION)", str(refused.value))


@pytest.mark.parametrize(
    "env",
    [
        {"JOBYARD_JOB_TIMEOUT": "1e11"},
        {"JOBYARD_RETENTION_FAILED": "P1000000D"},
        {"JOBYARD_JOB_TIMEOUTS": '{"report": 1e11}'},
    ],
    ids=["job_timeout", "retention_failed", "job_timeouts"],
)
def test_every_accepted_duration_is_usable_by_maintenance(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        config = Config.from_env(database_url=sqlite_url)
    except ConfigError:
        return  # refusing it up front is a fix too
    with StoreRunner(sqlite_url) as sr:
        sr.run(run_maintenance(sr.store, config))


def test_durations_beyond_a_century_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,700 years would break date arithmetic in the leader's maintenance: refused."""
    monkeypatch.setenv("JOBYARD_JOB_TIMEOUT", "P1000000D")
    with pytest.raises(ConfigError, match="JOBYARD_JOB_TIMEOUT"):
        Config.from_env()


def test_empty_path_variables_mean_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Documented behaviour, not a crash: an empty JOBYARD_TEMPLATES_DIR is the path "." (the
    working directory), not "unset" as an empty JOBYARD_API_TOKEN is for the server."""
    monkeypatch.setenv("JOBYARD_TEMPLATES_DIR", "")
    config = Config.from_env()
    assert config.templates_path == Path(".")


def test_a_url_config_accepts_but_no_store_can_open_fails_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Config checks only the scheme; `open_store` then refuses the rest with StoreError (not
    a crash), so the bad URL still fails at start."""
    monkeypatch.setenv("JOBYARD_DATABASE_URL", "sqlite://relative-without-third-slash")
    config = Config.from_env()
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store(config.database_url)
