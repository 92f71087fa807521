"""Contracts for a service's own tests, built the same way the runtime builds them.

>>> from msp_runtime import testing
>>> contract = testing.service_contract({"REDIS_ENDPOINT": "redis://127.0.0.1:6379"})
>>> contract.port, contract.redis.configured, contract.msp
(8080, True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn, TypeVar, cast

import structlog

from .contract import JobContract, ServiceContract
from .env import Env, load_config
from .log import Logger

__all__ = ["Metadata", "job_contract", "load_test_config", "service_contract"]

ConfigT = TypeVar("ConfigT")

_SERVICE_DEFAULTS = {"PORT": "8080"}


@dataclass(frozen=True)
class Metadata:
    """A stand-in for a service's ``name`` and ``version``."""

    name: str = "test-service"
    version: str = "0.0.0-test"


def service_contract(environ: Mapping[str, str] | None = None, *, metadata: Metadata | None = None) -> ServiceContract:
    """A :class:`ServiceContract` from ``environ`` alone (not ``os.environ``), ``PORT`` defaulting to 8080.

    Raises :class:`~msp_runtime.ConfigError` when ``environ`` is invalid, like the runtime would.
    """
    env = Env({**_SERVICE_DEFAULTS, **(environ or {})})
    contract = ServiceContract.from_env(env, metadata or Metadata(), _silent())
    env.validate()
    return contract


def job_contract(environ: Mapping[str, str] | None = None, *, metadata: Metadata | None = None) -> JobContract:
    """A :class:`JobContract` from ``environ`` alone; raises :class:`~msp_runtime.ConfigError` if invalid."""
    env = Env(environ or {})
    contract = JobContract.from_env(env, metadata or Metadata(), _silent())
    env.validate()
    return contract


def load_test_config(config_type: type[ConfigT], environ: Mapping[str, str] | None = None) -> ConfigT:
    """Load a service's configuration type from ``environ``; raises :class:`~msp_runtime.ConfigError`."""
    env = Env(environ or {})
    config = load_config(env, config_type)
    env.validate()
    return config


def _drop(*_: object) -> NoReturn:
    raise structlog.DropEvent


def _silent() -> Logger:
    """A logger that says nothing: tests need no DIAGNOSTICS_SECRET warning."""
    return cast(Logger, structlog.wrap_logger(structlog.ReturnLogger(), processors=[_drop]))
