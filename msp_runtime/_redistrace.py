"""Traced Redis clients: one client span per command."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from opentelemetry import trace
from opentelemetry.trace import SpanKind

_tracer = trace.get_tracer("msp_runtime.redis")


def _attributes(client: Any, command: str) -> dict[str, Any]:
    kwargs = client.connection_pool.connection_kwargs
    return {
        "db.system.name": "redis",
        "db.operation.name": command,
        "server.address": str(kwargs.get("host", kwargs.get("path", ""))),
        "server.port": int(kwargs.get("port", 0) or 0),
        "db.namespace": str(kwargs.get("db", 0)),
    }


class TracedRedis(redis.Redis):
    """:class:`redis.Redis` whose commands are traced (argument values are not recorded)."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        command = str(args[0]).upper() if args else "UNKNOWN"
        with _tracer.start_as_current_span(command, kind=SpanKind.CLIENT, attributes=_attributes(self, command)):
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


class TracedAsyncRedis(redis.asyncio.Redis):
    """:class:`redis.asyncio.Redis` whose commands are traced."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        command = str(args[0]).upper() if args else "UNKNOWN"
        with _tracer.start_as_current_span(command, kind=SpanKind.CLIENT, attributes=_attributes(self, command)):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
