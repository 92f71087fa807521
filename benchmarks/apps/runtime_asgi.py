"""The same raw ASGI route as ``bare_asgi``, run by msp-runtime (diagnostics, logging, tracing)."""

from typing import Any

from msp_runtime import Logger, NoConfig, ServiceApp, ServiceContract, runtime


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


class Bench:
    name = "bench"
    version = "1"
    config_type = NoConfig

    async def initialize(self, logger: Logger, contract: ServiceContract, config: NoConfig) -> ServiceApp:
        return ServiceApp(app=app)


if __name__ == "__main__":
    runtime.start(Bench())
