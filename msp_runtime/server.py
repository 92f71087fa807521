"""Serving an ASGI app with uvicorn, with signals left to the runtime."""

from __future__ import annotations

import contextlib
import math
import socket
from collections.abc import Generator

import uvicorn

from .diagnostics import ASGIApp

__all__ = ["HTTPServer"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The runtime owns SIGTERM/SIGINT; uvicorn's own handler would re-raise the
        # signal after shutdown and kill the process before telemetry is flushed.
        yield


class HTTPServer:
    """The service's HTTP server; its name as a routine is ``http``."""

    name = "http"

    def __init__(self, app: ASGIApp, *, host: str, port: int, drain_timeout: float) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="auto",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=math.ceil(drain_timeout),
        )
        self._server = _Server(config)
        self._socket: socket.socket | None = None

    def bind(self) -> None:
        """Bind the listening socket now, so a taken port fails startup with a clear error."""
        config = self._server.config
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it every response waits out a 40 ms delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.host, config.port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self._socket = sock

    async def start(self) -> None:
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        try:
            await self._server.serve(sockets=[self._socket])
        except SystemExit as exc:  # uvicorn exits on lifespan startup failure
            raise RuntimeError(f"HTTP server failed to start (exit code {exc.code})") from None

    async def stop(self) -> None:
        """Stop accepting connections; in-flight requests get ``drain_timeout`` to finish."""
        self._server.should_exit = True

    def force_stop(self) -> None:
        self._server.force_exit = True
        self._server.should_exit = True
