from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pydantic
import pytest

from msp_runtime import ConfigError, Env, ServiceContract, testing
from msp_runtime.env import load_config, parse_go_duration


def errors_of(env: Env) -> list[str]:
    with pytest.raises(ConfigError) as info:
        env.validate()
    return [str(e) for e in info.value.errors]


class TestGet:
    def test_value_default_and_required(self) -> None:
        env = Env({"A": "x"})
        assert env.get("A", "d", "a") == "x"
        assert env.get("B", "d", "b") == "d"
        assert env.get("C", None, "the c") == ""
        assert errors_of(env) == ["C: required but not set (description: the c)"]

    def test_empty_value_is_present_and_rejected_as_upstream(self) -> None:
        env = Env({"ENVIRONMENT_ID": ""})
        assert env.get("ENVIRONMENT_ID", "unknown", "env id") == ""
        assert errors_of(env) == ["ENVIRONMENT_ID: set to an empty value; a value is required (description: env id)"]

    def test_optional_is_presence_based(self) -> None:
        env = Env({"SET": "", "FULL": "v"})
        assert env.get_optional("SET", "s") == ""
        assert env.get_optional("FULL", "f") == "v"
        assert env.get_optional("MISSING", "m") is None
        env.validate()


class TestTypedGetters:
    @pytest.mark.parametrize(("raw", "value"), [("42", 42), ("-7", -7), ("+3", 3), ("0", 0)])
    def test_int(self, raw: str, value: int) -> None:
        env = Env({"N": raw})
        assert env.get_int("N", 1, "n") == value
        env.validate()

    @pytest.mark.parametrize("raw", ["", "4.2", "1_000", " 1", "0x10", "abc"])
    def test_int_rejects(self, raw: str) -> None:
        env = Env({"PORT": raw})
        assert env.get_int("PORT", None, "service port") == 0
        (error,) = errors_of(env)
        assert error.startswith(f"PORT: invalid int {raw!r}")
        assert error.endswith("(description: service port)")

    def test_int_default_and_required(self) -> None:
        env = Env({})
        assert env.get_int("N", 5, "n") == 5
        assert env.get_int("PORT", None, "port") == 0
        assert errors_of(env) == ["PORT: required but not set (description: port)"]

    @pytest.mark.parametrize("raw", ["1", "t", "T", "TRUE", "true", "True"])
    def test_bool_true(self, raw: str) -> None:
        assert Env({"B": raw}).get_bool("B", False, "b") is True

    @pytest.mark.parametrize("raw", ["0", "f", "F", "FALSE", "false", "False"])
    def test_bool_false(self, raw: str) -> None:
        assert Env({"B": raw}).get_bool("B", True, "b") is False

    @pytest.mark.parametrize("raw", ["yes", "", "tRUE", "on"])
    def test_bool_rejects(self, raw: str) -> None:
        env = Env({"MSP": raw})
        assert env.get_bool("MSP", False, "msp") is False
        (error,) = errors_of(env)
        assert error.startswith(f"MSP: invalid bool {raw!r}")

    def test_float(self) -> None:
        env = Env({"F": "0.25", "G": "1e3", "BAD": "1.2.3"})
        assert env.get_float("F", 1.0, "f") == 0.25
        assert env.get_float("G", 1.0, "g") == 1000.0
        assert env.get_float("BAD", 1.0, "bad") == 0.0
        assert env.get_float("MISSING", 0.5, "m") == 0.5
        assert [e.split(":")[0] for e in errors_of(env)] == ["BAD"]

    @pytest.mark.parametrize(("raw", "ok"), [("0", True), ("100", True), ("55", True), ("101", False), ("-1", False)])
    def test_percent(self, raw: str, ok: bool) -> None:
        env = Env({"P": raw})
        value = env.get_percent("P", 10, "p")
        if ok:
            assert value == int(raw)
            env.validate()
        else:
            assert value == 0
            assert errors_of(env) == [f"P: invalid percent {raw!r}: must be 0 <= p <= 100 (description: p)"]

    def test_percent_bad_int_reports_once(self) -> None:
        env = Env({"P": "x"})
        env.get_percent("P", 10, "p")
        assert len(errors_of(env)) == 1

    def test_duration(self) -> None:
        env = Env({"D": "600s", "BAD": "10"})
        assert env.get_duration("D", "1s", "d") == timedelta(seconds=600)
        assert env.get_duration("MISSING", "1m30s", "m") == timedelta(seconds=90)
        assert env.get_duration("BAD", "1s", "bad") == timedelta(0)
        (error,) = errors_of(env)
        assert error.startswith("BAD: invalid duration '10': missing unit")

    def test_optional_duration(self) -> None:
        env = Env({"JOB_EXECUTION_DEADLINE": "300s", "X": "soon"})
        assert env.get_optional_duration("JOB_EXECUTION_DEADLINE", "d") == timedelta(seconds=300)
        assert env.get_optional_duration("NOPE", "n") is None
        assert env.get_optional_duration("X", "x") is None
        assert [e.split(":")[0] for e in errors_of(env)] == ["X"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", timedelta(0)),
        ("300ms", timedelta(milliseconds=300)),
        ("-1.5h", timedelta(hours=-1.5)),
        ("2h45m", timedelta(hours=2, minutes=45)),
        ("1us", timedelta(microseconds=1)),
        ("1µs", timedelta(microseconds=1)),
        ("1500ns", timedelta(microseconds=1)),
        (".5s", timedelta(milliseconds=500)),
    ],
)
def test_go_duration(raw: str, expected: timedelta) -> None:
    assert parse_go_duration(raw) == expected


@pytest.mark.parametrize("raw", ["", "s", "1", "1d", "-", "1.s.", "h1"])
def test_go_duration_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_go_duration(raw)


def test_all_problems_reported_together_in_order() -> None:
    env = Env({"PORT": "eighty", "MSP": "maybe", "RATE": "200"})
    env.get_int("PORT", None, "service port")
    env.get_bool("MSP", False, "msp")
    env.get_percent("RATE", 5, "rate")
    env.get("NAME", None, "name")
    with pytest.raises(ConfigError) as info:
        env.validate()
    assert info.value.variables == ["PORT", "MSP", "RATE", "NAME"]
    text = str(info.value)
    assert text.startswith("4 configuration problems:")
    for name in ("PORT", "MSP", "RATE", "NAME"):
        assert f"  - {name}: " in text


def test_secret_values_never_appear_in_errors_or_help() -> None:
    env = Env({"REDIS_ENDPOINT": "http://:hunter2@redis:6379", "PGDSN": "password=hunter2", "MSP": "true"})
    ServiceContract.from_env(env, testing.Metadata())
    with pytest.raises(ConfigError) as info:
        env.validate()
    assert {"REDIS_ENDPOINT", "PGDSN", "PORT"} <= set(info.value.variables)
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in env.help_text("svc", "1")


def test_getters_refuse_after_validate() -> None:
    env = Env({})
    env.validate()
    with pytest.raises(RuntimeError, match="after validate"):
        env.get("X", "y", "x")


def test_help_lists_every_variable_once_in_order() -> None:
    env = Env({})
    env.get("VARIABLE", "13", "variable value")
    env.get_bool("MSP", False, "msp flag")
    env.get_int("PORT", None, "service port")
    env.get_optional("REDIS_ENDPOINT", "redis url")
    env.get_bool("MSP", False, "read twice")
    assert env.help_text("svc", "1.2.3").splitlines() == [
        "SERVICE: svc",
        "VERSION: 1.2.3",
        "CONFIGURATION OPTIONS:",
        "- 'VARIABLE': variable value (default: '13')",
        "- 'MSP': msp flag (default: 'false')",
        "- 'PORT': service port (required)",
        "- 'REDIS_ENDPOINT': redis url (optional)",
    ]


@dataclass
class LoaderConfig:
    n: int

    @classmethod
    def load(cls, env: Env) -> LoaderConfig:
        return cls(n=env.get_int("N", 1, "n"))


class PydanticConfig(pydantic.BaseModel):
    variable: str = pydantic.Field("13", description="variable value")
    workers: int = pydantic.Field(description="worker count")
    api_key: pydantic.SecretStr = pydantic.Field(pydantic.SecretStr(""), alias="EXAMPLE_API_KEY")


def test_load_config_with_loader() -> None:
    assert load_config(Env({"N": "3"}), LoaderConfig) == LoaderConfig(3)


def test_load_config_with_pydantic_model() -> None:
    env = Env({"WORKERS": "4", "EXAMPLE_API_KEY": "k"})
    config = load_config(env, PydanticConfig)
    env.validate()
    assert config.variable == "13"
    assert config.workers == 4
    assert config.api_key.get_secret_value() == "k"
    assert [v.name for v in env.requested] == ["VARIABLE", "WORKERS", "EXAMPLE_API_KEY"]


def test_pydantic_errors_name_the_variable() -> None:
    env = Env({"WORKERS": "many", "VARIABLE": ""})
    load_config(env, PydanticConfig)
    with pytest.raises(ConfigError) as info:
        env.validate()
    assert info.value.variables == ["WORKERS"]
    assert "integer" in str(info.value)


def test_pydantic_missing_required_field_reported_once() -> None:
    env = Env({})
    load_config(env, PydanticConfig)
    with pytest.raises(ConfigError) as info:
        env.validate()
    assert [str(e) for e in info.value.errors] == ["WORKERS: required but not set (description: worker count)"]


def test_a_variable_read_twice_is_reported_once() -> None:
    env = Env({"MSP": "maybe"})
    env.get_bool("MSP", False, "msp")
    env.get_bool("MSP", False, "msp")
    assert errors_of(env) == ["MSP: invalid bool 'maybe': expected one of 1, t, true, 0, f, false (description: msp)"]


def test_load_config_with_pydantic_settings_reads_only_through_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Settings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="SVC_")
        workers: int = pydantic.Field(2, description="worker count")
        region: str = pydantic.Field(description="region")

    monkeypatch.setenv("SVC_WORKERS", "99")  # os.environ is not a source: the Env is
    env = Env({"SVC_REGION": "us", "SVC_WORKERS": "8"})
    settings = load_config(env, Settings)
    env.validate()
    assert (settings.workers, settings.region) == (8, "us")
    assert [v.name for v in env.requested] == ["SVC_WORKERS", "SVC_REGION"]
