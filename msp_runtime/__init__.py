"""msp-runtime: run Python services and jobs on Sourcegraph's Managed Services Platform.

>>> from msp_runtime import runtime
>>> runtime.start(MyService())      # doctest: +SKIP
"""

from __future__ import annotations

from . import runtime
from .contract import Contract, JobContract, ServiceContract, ServiceMetadata
from .diagnostics import (
    ASGIApp,
    HealthCheck,
    HealthCheckError,
    check_all,
    check_authorization,
    require_diagnostics_auth,
)
from .env import ConfigError, Env, EnvError
from .jobs import JobExecution
from .log import Logger, get_logger
from .routines import PeriodicRoutine, Routine
from .service import Job, NoConfig, Service, ServiceApp

__version__ = "0.1.0"

__all__ = [
    "ASGIApp",
    "ConfigError",
    "Contract",
    "Env",
    "EnvError",
    "HealthCheck",
    "HealthCheckError",
    "Job",
    "JobContract",
    "JobExecution",
    "Logger",
    "NoConfig",
    "PeriodicRoutine",
    "Routine",
    "Service",
    "ServiceApp",
    "ServiceContract",
    "ServiceMetadata",
    "__version__",
    "check_all",
    "check_authorization",
    "get_logger",
    "require_diagnostics_auth",
    "runtime",
]
