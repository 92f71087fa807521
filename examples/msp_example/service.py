"""The example service: its configuration, backends, HTTP API and health check."""

from __future__ import annotations

from msp_runtime import Logger, ServiceApp, ServiceContract

from .backends import Backends
from .config import VERSION, Config
from .httpapi import build_app


class ExampleService:
    name = "msp-example"
    version = VERSION
    config_type = Config

    async def initialize(self, logger: Logger, contract: ServiceContract, config: Config) -> ServiceApp:
        logger.info("starting service", stateless=config.stateless_mode)
        backends = Backends.disabled() if config.stateless_mode else await Backends.connect(contract, logger)
        return ServiceApp(
            app=build_app(contract, config.variable, backends),
            healthy=backends.healthy,
            routines=backends.routines(),
            on_stop=[backends.close],
        )
