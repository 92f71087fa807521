"""The MSP contract: what the platform's Terraform promises a service, as typed values.

:class:`ServiceContract` and :class:`JobContract` are built from an :class:`~msp_runtime.Env`
in the same order upstream reads the variables, so ``--help`` lists them alike. Backends
are described here and only imported when used (see :mod:`msp_runtime.postgresql`,
:mod:`msp_runtime.redis`, :mod:`msp_runtime.bigquery`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypedDict

from .bigquery import BigQueryContract
from .diagnostics import DiagnosticsContract
from .env import Env
from .jobs import JobExecution
from .log import Logger, get_logger
from .postgresql import PostgreSQLContract
from .redis import RedisContract

__all__ = ["Contract", "JobContract", "ServiceContract", "ServiceMetadata"]


class ServiceMetadata(Protocol):
    """Identifies a service or job: ``name`` is its MSP id, ``version`` a free-form stamp."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...


@dataclass(frozen=True, kw_only=True)
class Contract:
    """What services and jobs share. Secrets are kept out of ``repr``."""

    service: ServiceMetadata
    msp: bool
    """Deployed on MSP (``MSP=true``) rather than running locally."""
    environment_id: str
    """``ENVIRONMENT_ID``, e.g. ``prod``; ``unknown`` when not set."""
    gcp_project: str | None
    """``GOOGLE_CLOUD_PROJECT``."""
    postgresql: PostgreSQLContract
    redis: RedisContract
    bigquery: BigQueryContract
    diagnostics: DiagnosticsContract

    @property
    def redis_endpoint(self) -> str | None:
        """``REDIS_ENDPOINT``, the full Redis URL (it carries a password)."""
        return self.redis.endpoint


@dataclass(frozen=True, kw_only=True)
class ServiceContract(Contract):
    """The contract of a Cloud Run service."""

    port: int
    """``PORT``: the service listens on ``0.0.0.0:port``."""
    external_dns_name: str | None
    """``EXTERNAL_DNS_NAME``, the public domain if the service has one."""

    @classmethod
    def from_env(cls, env: Env, service: ServiceMetadata, logger: Logger | None = None) -> ServiceContract:
        port = env.get_int("PORT", None, "service port")
        if env.is_set("PORT") and not 0 < port < 65536:
            env.add_error("PORT", f"port {port} is out of range 1-65535")
        external_dns_name = env.get_optional("EXTERNAL_DNS_NAME", "external DNS name of the service")
        return cls(port=port, external_dns_name=external_dns_name, **_base(env, service, logger, serves_http=True))


@dataclass(frozen=True, kw_only=True)
class JobContract(Contract):
    """The contract of a Cloud Run job."""

    execution: JobExecution
    """The Cloud Run Jobs execution, task index, attempt and count."""

    @classmethod
    def from_env(cls, env: Env, service: ServiceMetadata, logger: Logger | None = None) -> JobContract:
        base = _base(env, service, logger, serves_http=False)
        return cls(execution=JobExecution.from_env(env), **base)


class _Base(TypedDict):
    service: ServiceMetadata
    msp: bool
    environment_id: str
    gcp_project: str | None
    postgresql: PostgreSQLContract
    redis: RedisContract
    bigquery: BigQueryContract
    diagnostics: DiagnosticsContract


def _base(env: Env, service: ServiceMetadata, logger: Logger | None, *, serves_http: bool) -> _Base:
    logger = logger or get_logger("msp.contract")
    gcp_project = env.get_optional("GOOGLE_CLOUD_PROJECT", "GCP project ID")
    environment_id = env.get("ENVIRONMENT_ID", "unknown", "MSP Service Environment ID")
    msp = env.get_bool("MSP", False, "indicates if we are running in a MSP environment")
    redis = RedisContract.from_env(env)
    postgresql = PostgreSQLContract.from_env(env, msp=msp)
    bigquery = BigQueryContract.from_env(env)
    diagnostics = DiagnosticsContract.from_env(
        env,
        service=service,
        msp=msp,
        gcp_project=gcp_project,
        environment_id=environment_id,
        logger=logger if serves_http else None,  # a job has no diagnostics endpoints to guard
    )
    return {
        "service": service,
        "msp": msp,
        "environment_id": environment_id,
        "gcp_project": gcp_project,
        "postgresql": postgresql,
        "redis": redis,
        "bigquery": bigquery,
        "diagnostics": diagnostics,
    }
