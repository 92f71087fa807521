"""The example's own configuration, read through the runtime's Env like every variable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from msp_runtime import Env

VERSION = "0.0.0+dev"


@dataclass(frozen=True)
class Config:
    stateless_mode: bool
    variable: str

    @classmethod
    def load(cls, env: Env) -> Config:
        return cls(
            stateless_mode=env.get_bool("STATELESS_MODE", False, "if true, disable dependencies"),
            variable=env.get("VARIABLE", "13", "variable value"),
        )


@dataclass(frozen=True)
class JobConfig:
    work_duration: timedelta
    fail: bool

    @classmethod
    def load(cls, env: Env) -> JobConfig:
        return cls(
            work_duration=env.get_duration("EXAMPLE_JOB_DURATION", "0s", "how long the job pretends to work"),
            fail=env.get_bool("EXAMPLE_JOB_FAIL", False, "make the job fail, to exercise error reporting"),
        )
