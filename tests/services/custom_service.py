"""A service whose behaviour the process tests choose with CUSTOM_MODE."""

from __future__ import annotations

import asyncio
from typing import Any

from msp_runtime import Env, Logger, ServiceApp, ServiceContract, runtime


class Config:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    @classmethod
    def load(cls, env: Env) -> Config:
        return cls(env.get("CUSTOM_MODE", "ok", "ok, fail-init, routine-returns, routine-raises, slow-stop, unhealthy"))


class Routine:
    def __init__(self, mode: str) -> None:
        self.name = "worker"
        self.mode = mode
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        if self.mode == "routine-returns":
            await asyncio.sleep(0.5)
            return
        if self.mode == "routine-raises":
            await asyncio.sleep(0.5)
            raise RuntimeError("worker lost its connection")
        await self.stopped.wait()

    async def stop(self) -> None:
        if self.mode == "slow-stop":
            await asyncio.sleep(60)
        print("worker stopped", flush=True)
        self.stopped.set()


class CustomService:
    name = "custom"
    version = "9.9.9"
    config_type = Config

    async def initialize(self, logger: Logger, contract: ServiceContract, config: Config) -> ServiceApp:
        if config.mode == "fail-init":
            raise ConnectionError("database unreachable")

        async def cleanup() -> None:
            print("cleanup ran", flush=True)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            status, body = 200, b"custom"
            if scope["path"] == "/boom":
                try:
                    raise ZeroDivisionError("division by zero in handler")
                except ZeroDivisionError:
                    logger.exception("request failed", path="/boom")
                status, body = 500, b"boom"
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": body})

        async def healthy(query: dict[str, list[str]]) -> None:
            if config.mode == "unhealthy":
                raise RuntimeError("redis: connection refused")

        return ServiceApp(
            app=app, healthy=healthy, routines=[Routine(config.mode)], on_stop=[cleanup], stop_timeout=1.0
        )


if __name__ == "__main__":
    runtime.start(CustomService())
