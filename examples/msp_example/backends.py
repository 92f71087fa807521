"""The backends the example uses when the contract configures them."""

from __future__ import annotations

from typing import Any

from msp_runtime import Logger, ServiceContract


class Backends:
    def __init__(self) -> None:
        pass

    @classmethod
    def disabled(cls) -> Backends:
        return cls()

    @classmethod
    async def connect(cls, contract: ServiceContract, logger: Logger) -> Backends:
        off = [
            name
            for name, configured in (
                ("postgresql", contract.postgresql.configured),
                ("redis", contract.redis.configured),
                ("bigquery", contract.bigquery.configured),
            )
            if not configured
        ]
        if off:
            logger.info("backends not configured, running without them", off=off)
        return cls()

    def routes(self) -> list[Any]:
        return []

    async def healthy(self, query: dict[str, list[str]]) -> None:
        return None

    async def close(self) -> None:
        return None
