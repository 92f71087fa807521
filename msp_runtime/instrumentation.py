"""Tracing and metrics for every HTTP request the service serves.

One server span per request, named as upstream's ``otelhttp`` handler names them
(``http.GET /path``), parented on the incoming ``traceparent`` or
``X-Cloud-Trace-Context``; and two instruments following the OpenTelemetry HTTP
semantic conventions: ``http.server.request.duration`` (a histogram, seconds) and
``http.server.active_requests``.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .diagnostics import ASGIApp

__all__ = ["instrument_asgi"]

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def instrument_asgi(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` so each HTTP request gets a span and is counted and timed."""
    tracer = trace.get_tracer("msp_runtime.http")
    meter = metrics.get_meter("msp_runtime.http")
    duration = meter.create_histogram(
        "http.server.request.duration",
        unit="s",
        description="Duration of HTTP server requests.",
        explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
    )
    active = meter.create_up_down_counter(
        "http.server.active_requests", unit="{request}", description="Number of active HTTP server requests."
    )
    extract = propagate.extract

    async def instrumented(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        method = scope["method"]
        path = scope["path"]
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status = 500
        active_attrs = {"http.request.method": method}
        active.add(1, active_attrs)
        started = time.perf_counter()

        with tracer.start_as_current_span(
            f"http.{method} {path}",
            context=extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path, "url.scheme": scope.get("scheme", "http")},
        ) as span:

            async def send_and_record(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_and_record)
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                active.add(-1, active_attrs)
                duration.record(
                    time.perf_counter() - started,
                    {"http.request.method": method, "http.response.status_code": status},
                )

    return instrumented
