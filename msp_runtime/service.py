"""What a service or job gives the runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from .diagnostics import ASGIApp, HealthCheck
from .env import Env
from .log import Logger
from .routines import Routine

if TYPE_CHECKING:
    from .contract import JobContract, ServiceContract

__all__ = ["Job", "NoConfig", "Service", "ServiceApp"]

ConfigT = TypeVar("ConfigT")


class NoConfig:
    """The configuration of a service that reads no variables of its own."""

    @classmethod
    def load(cls, env: Env) -> NoConfig:
        return cls()


@dataclass
class ServiceApp:
    """What :meth:`Service.initialize` returns: what to serve, check and run."""

    app: ASGIApp | None = None
    """The service's ASGI app, served on ``0.0.0.0:$PORT`` behind the diagnostics endpoints."""
    healthy: HealthCheck | None = None
    """``/-/healthz`` check: gets the query parameters; raise to report unhealthy."""
    routines: Sequence[Routine] = ()
    """Background routines: started after the server, stopped after it drains, last first."""
    on_stop: Sequence[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Cleanups (close pools, flush writers) run after the routines stop, last first."""
    health_timeout: float = 5.0
    """Seconds a health check may take before ``/-/healthz`` answers 500."""
    drain_timeout: float = 6.0
    """Seconds in-flight requests get to finish after SIGTERM (Cloud Run kills at 10 s)."""
    stop_timeout: float = 2.0
    """Seconds all routines and cleanups together get to stop."""


class Service(Protocol[ConfigT]):
    """A Cloud Run service: metadata, a configuration type and ``initialize``."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def config_type(self) -> type[ConfigT]:
        """A class with ``load(env)``, or a pydantic model; see :func:`~msp_runtime.env.load_config`."""
        ...

    async def initialize(self, logger: Logger, contract: ServiceContract, config: ConfigT) -> ServiceApp:
        """Connect to backends and build the app; raising aborts startup with exit code 1."""
        ...


class Job(Protocol[ConfigT]):
    """A Cloud Run job: metadata, a configuration type and ``execute``."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def config_type(self) -> type[ConfigT]: ...

    async def execute(self, logger: Logger, contract: JobContract, config: ConfigT) -> None:
        """Run one execution to completion; raising makes the job exit non-zero."""
        ...
