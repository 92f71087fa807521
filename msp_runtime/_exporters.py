"""Exporters built on their first export, in the exporter's own thread.

The OTLP exporters import protobuf, requests and (for Google's endpoint) google-auth,
which finds credentials on the metadata server: ~60 ms or more that a cold start would
otherwise pay before the first request, for exports that happen seconds later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .log import Logger

__all__ = ["DeferredExporter", "DeferredSpanExporter", "deferred_metric_exporter"]


class DeferredExporter:
    """Builds the exporter ``factory`` returns when first needed; reports a failure to build once."""

    def __init__(self, factory: Callable[[], Any], what: str, logger: Logger) -> None:
        self._factory = factory
        self._what = what
        self._log = logger
        self._real: Any = None
        self._failed = False
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The exporter, or ``None`` when it cannot be built (the batch is then dropped)."""
        if self._real is not None:
            return self._real
        with self._lock:
            if self._real is None:
                try:
                    self._real = self._factory()
                except Exception as exc:
                    report = self._log.debug if self._failed else self._log.error
                    report(f"cannot create the {self._what} exporter, dropping this batch", error=str(exc))
                    self._failed = True
            return self._real

    @property
    def built(self) -> Any:
        return self._real


class DeferredSpanExporter(SpanExporter):
    """A span exporter whose real exporter is created on the first export."""

    def __init__(self, factory: Callable[[], SpanExporter], logger: Logger) -> None:
        self._exporter = DeferredExporter(factory, "span", logger)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        real = self._exporter.get()
        return SpanExportResult.FAILURE if real is None else real.export(spans)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        real = self._exporter.built
        return True if real is None else bool(real.force_flush(timeout_millis))

    def shutdown(self) -> None:
        real = self._exporter.built
        if real is not None:
            real.shutdown()


def deferred_metric_exporter(factory: Callable[[], Any], logger: Logger) -> Any:
    """A metric exporter (cumulative, default aggregation: OTLP's defaults) created on its first export."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class DeferredMetricExporter(MetricExporter):
        def __init__(self) -> None:
            super().__init__()
            self._exporter = DeferredExporter(factory, "metric", logger)

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
            real = self._exporter.get()
            if real is None:
                return MetricExportResult.FAILURE
            return real.export(metrics_data, timeout_millis=timeout_millis, **kwargs)  # type: ignore[no-any-return]

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            real = self._exporter.built
            return True if real is None else bool(real.force_flush(timeout_millis))

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            real = self._exporter.built
            if real is not None:
                real.shutdown(timeout_millis=timeout_millis, **kwargs)

    return DeferredMetricExporter()
