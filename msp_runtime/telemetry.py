"""OpenTelemetry traces and metrics.

Where they go:

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: OTLP/HTTP to that endpoint (a collector).
- otherwise, a GCP project (``OTEL_GCP_PROJECT_ID``, default ``GOOGLE_CLOUD_PROJECT``):
  OTLP/HTTP to Google's ``telemetry.googleapis.com`` with Application Default
  Credentials (Google's own trace and monitoring exporters are deprecated).
- otherwise (local development): traces to the console when ``OTEL_TRACES_EXPORTER=console``,
  else nowhere; metrics are served as Prometheus text at ``/metrics``.

Sampling follows ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` with upstream's
default (parent-based, always on). Propagation reads W3C ``traceparent`` and Cloud Run's
``X-Cloud-Trace-Context`` and writes W3C. ``OTEL_SDK_DISABLED=true`` turns it all off.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .env import Env
from .log import Logger, get_logger

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from ._deferredmetrics import DeferredMeterProvider
    from ._httpmetrics import RequestMetrics

__all__ = ["GOOGLE_TELEMETRY_ENDPOINT", "Telemetry", "TelemetryConfig", "setup_telemetry"]

GOOGLE_TELEMETRY_ENDPOINT = "https://telemetry.googleapis.com"
_EXEMPLAR_FILTERS = ("always_off", "trace_based", "always_on")
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


@dataclass(frozen=True, kw_only=True)
class TelemetryConfig:
    """OpenTelemetry settings read from the environment."""

    gcp_project_id: str | None
    sdk_disabled: bool
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    otlp_endpoint: str | None = None
    console_traces: bool = False
    metric_interval_seconds: float = 30.0
    exemplar_filter: str = "always_off"
    cloud_run_service: str | None = None
    cloud_run_revision: str | None = None
    cloud_run_job: str | None = None

    @classmethod
    def from_env(cls, env: Env, *, gcp_project: str | None, msp: bool) -> TelemetryConfig:
        project = env.get_optional("OTEL_GCP_PROJECT_ID", "GCP project ID for OpenTelemetry export")
        disabled = env.get_bool("OTEL_SDK_DISABLED", False, "disable OpenTelemetry SDK integration")
        sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on", "trace sampler").lower()
        if sampler not in _SAMPLERS:
            env.add_error("OTEL_TRACES_SAMPLER", f"unknown sampler {sampler!r}; expected one of {', '.join(_SAMPLERS)}")
        ratio = env.get_float("OTEL_TRACES_SAMPLER_ARG", 1.0, "sampling ratio for the traceidratio samplers")
        if not 0.0 <= ratio <= 1.0:
            env.add_error("OTEL_TRACES_SAMPLER_ARG", f"ratio {ratio:g} is outside 0..1")
        endpoint = env.get_optional("OTEL_EXPORTER_OTLP_ENDPOINT", "OTLP/HTTP collector endpoint")
        exporter = env.get("OTEL_TRACES_EXPORTER", "otlp", "trace exporter in local dev: otlp, console or none")
        interval = env.get_duration("OTEL_METRIC_EXPORT_INTERVAL", "30s", "how often metrics are exported")
        exemplars = env.get(
            "OTEL_METRICS_EXEMPLAR_FILTER",
            "always_off",
            "metric exemplars: always_off (cheapest per measurement), trace_based or always_on",
        ).lower()
        if exemplars not in _EXEMPLAR_FILTERS:
            env.add_error("OTEL_METRICS_EXEMPLAR_FILTER", f"expected one of {', '.join(_EXEMPLAR_FILTERS)}")
        return cls(
            gcp_project_id=project or gcp_project or None,
            sdk_disabled=disabled,
            sampler=sampler,
            sampler_arg=ratio,
            otlp_endpoint=endpoint or None,
            console_traces=exporter == "console",
            metric_interval_seconds=max(interval.total_seconds(), 1.0),
            exemplar_filter=exemplars,
            cloud_run_service=env.get_optional("K_SERVICE", "Cloud Run service name (set by Cloud Run)"),
            cloud_run_revision=env.get_optional("K_REVISION", "Cloud Run revision (set by Cloud Run)"),
            cloud_run_job=env.get_optional("CLOUD_RUN_JOB", "Cloud Run job name (set by Cloud Run)"),
        )

    @property
    def exports_otlp(self) -> bool:
        """Traces and metrics go out over OTLP (to a collector or Google), not to the console or ``/metrics``."""
        return bool(self.otlp_endpoint or self.gcp_project_id)

    @property
    def on_cloud_run(self) -> bool:
        return bool(self.cloud_run_service or self.cloud_run_job)


class Telemetry:
    """The configured providers; :meth:`shutdown` flushes them within a bound.

    The metrics SDK is loaded after startup (see :mod:`._deferredmetrics`): call
    :meth:`load_metrics` once the service is listening.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | DeferredMeterProvider | None = None,
        resource: Resource | None = None,
        request_metrics: RequestMetrics | None = None,
        *,
        pulled: bool = False,
    ) -> None:
        self.tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self.resource = resource
        self.request_metrics = request_metrics
        """Where the HTTP instrumentation records request durations (merged into every collection)."""
        self.pulled = pulled
        """Metrics are read through ``/metrics`` (local development) rather than pushed."""
        self.prometheus: InMemoryMetricReader | None = None
        """The reader ``/metrics`` renders, set when pulled metrics are loaded."""

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    @property
    def meter_provider(self) -> MeterProvider | None:
        """The SDK meter provider, loaded now if it was not yet."""
        from ._deferredmetrics import DeferredMeterProvider

        provider = self._meter_provider
        return provider.load() if isinstance(provider, DeferredMeterProvider) else provider

    def load_metrics(self) -> None:
        """Load the metrics SDK now if it was deferred (the runtime does so once the server listens)."""
        self.meter_provider  # noqa: B018 - the property loads it

    @property
    def metrics_endpoint(self) -> Callable[[], bytes] | None:
        """A renderer of Prometheus text, when metrics are pulled (local development)."""
        if not self.pulled:
            return None

        def render() -> bytes:
            self.meter_provider  # noqa: B018 - loads it, which sets self.prometheus
            return render_prometheus(self.prometheus) if self.prometheus is not None else b""

        return render

    def shutdown(self, timeout: float = 5.0, logger: Logger | None = None) -> None:
        """Flush and shut down traces and metrics in parallel, giving up after ``timeout`` seconds."""
        log = logger or get_logger("msp.otel")
        deadline = time.monotonic() + timeout
        millis = int(timeout * 1000)

        tracer_provider = self.tracer_provider

        def stop_tracing() -> None:
            if tracer_provider is not None:
                tracer_provider.force_flush(millis)
                tracer_provider.shutdown()

        def stop_metrics() -> None:
            provider = self.meter_provider  # loaded now if it was not yet: earlier requests are exported
            if provider is not None:
                provider.shutdown(timeout_millis=millis)  # exports once more: a flush first would double it

        def stop(name: str, step: Callable[[], None]) -> None:
            start = time.monotonic()
            try:
                step()
            except Exception as exc:
                log.warning(f"failed to shut down {name}", error=str(exc))
            else:
                log.debug(f"{name} shut down", elapsed=round(time.monotonic() - start, 3))

        steps = (("tracing", tracer_provider, stop_tracing), ("metrics", self._meter_provider, stop_metrics))
        threads = [
            threading.Thread(target=stop, args=(name, step), daemon=True)
            for name, provider, step in steps
            if provider is not None
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("telemetry shutdown timed out", timeout=timeout)


def setup_telemetry(
    config: TelemetryConfig,
    *,
    service_name: str,
    service_version: str,
    environment_id: str,
    logger: Logger | None = None,
    span_exporter: Any = None,
    metric_reader: Any = None,
) -> Telemetry:
    """Install global tracer and meter providers and propagators for ``config``.

    ``span_exporter`` and ``metric_reader`` replace the configured destinations (tests).
    The OTLP exporters are created on their first export and the metrics SDK is loaded
    later (:meth:`Telemetry.load_metrics`): neither is needed to serve the first
    request, and together they would add ~90 ms to a cold start.
    """
    log = logger or get_logger("msp.otel")
    if config.sdk_disabled:
        log.warning("OpenTelemetry SDK integration disabled by configuration")
        return Telemetry()

    from opentelemetry import metrics, propagate, trace
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from ._deferredmetrics import DeferredMeterProvider
    from ._httpmetrics import RequestMetrics
    from .propagation import CloudTraceContextPropagator

    resource = _resource(config, service_name, service_version, environment_id, log)
    pushed = metric_reader is not None or config.exports_otlp
    request_metrics = RequestMetrics(resource)
    tracer_provider = TracerProvider(resource=resource, sampler=_sampler(config))
    exporter = span_exporter if span_exporter is not None else _span_exporter(config, log)
    if exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))

    def build_meter_provider() -> MeterProvider:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader

        from ._httpmetrics import reader_class

        if metric_reader is not None:
            reader = metric_reader
        elif pushed:
            reader = reader_class(PeriodicExportingMetricReader)(
                _metric_exporter(config, log),
                export_interval_millis=config.metric_interval_seconds * 1000,
                request_metrics=request_metrics,
            )
        else:
            reader = telemetry.prometheus = reader_class(InMemoryMetricReader)(request_metrics=request_metrics)
        return MeterProvider(
            metric_readers=[reader], resource=resource, exemplar_filter=_exemplar_filter(config.exemplar_filter)
        )

    meter_provider = DeferredMeterProvider(build_meter_provider)
    request_metrics.register(meter_provider.get_meter("msp_runtime.http"))
    telemetry = Telemetry(tracer_provider, meter_provider, resource, request_metrics, pulled=not pushed)

    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    propagate.set_global_textmap(
        CompositePropagator([CloudTraceContextPropagator(), TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    return telemetry


def _otlp_url(config: TelemetryConfig, signal: str) -> str:
    base = config.otlp_endpoint or GOOGLE_TELEMETRY_ENDPOINT
    return f"{base.rstrip('/')}/v1/{signal}"


def _session(config: TelemetryConfig) -> Any:
    """Google-authenticated HTTP session for telemetry.googleapis.com; ``None`` for a collector."""
    if config.otlp_endpoint:
        return None
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return AuthorizedSession(credentials)  # type: ignore[no-untyped-call]


def _span_exporter(config: TelemetryConfig, log: Logger) -> Any:
    if config.exports_otlp:
        from ._exporters import DeferredSpanExporter

        def otlp() -> Any:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(endpoint=_otlp_url(config, "traces"), session=_session(config), timeout=10)

        return DeferredSpanExporter(otlp, log)
    if config.console_traces:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    log.debug("traces are not exported; set OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER=console")
    return None


def _metric_exporter(config: TelemetryConfig, log: Logger) -> Any:
    from ._exporters import deferred_metric_exporter

    def otlp() -> Any:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=_otlp_url(config, "metrics"), session=_session(config), timeout=10)

    return deferred_metric_exporter(otlp, log)


def _exemplar_filter(name: str) -> Any:
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, TraceBasedExemplarFilter

    # Off by default: the trace-based filter costs ~3 µs on every measurement.
    return {"always_on": AlwaysOnExemplarFilter, "trace_based": TraceBasedExemplarFilter}.get(
        name, AlwaysOffExemplarFilter
    )()


def _sampler(config: TelemetryConfig) -> Any:
    from opentelemetry.sdk.trace import sampling

    ratio = sampling.TraceIdRatioBased(config.sampler_arg)
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(ratio),
    }.get(config.sampler, sampling.ParentBased(sampling.ALWAYS_ON))


def _resource(config: TelemetryConfig, name: str, version: str, environment_id: str, log: Logger) -> Resource:
    from opentelemetry.sdk.resources import Resource

    attributes: dict[str, Any] = {
        "service.name": name,
        "service.version": version,
        "deployment.environment.name": environment_id,
    }
    if config.gcp_project_id:
        attributes["gcp.project_id"] = config.gcp_project_id
    detected: Mapping[str, Any] = {}
    if config.on_cloud_run:
        # Cloud Run's metadata server names the instance; upstream leaves service.instance.id empty.
        try:
            from opentelemetry.resourcedetector.gcp_resource_detector import GoogleCloudResourceDetector

            detected = GoogleCloudResourceDetector(raise_on_error=False).detect().attributes
        except Exception as exc:
            log.warning("GCP resource detection failed", error=str(exc))
    attributes["service.instance.id"] = str(detected.get("faas.instance") or uuid.uuid4())
    return Resource.create({**detected, **attributes})


# -- Prometheus text for /metrics in local development ---------------------------------


def render_prometheus(reader: InMemoryMetricReader) -> bytes:
    """Render the reader's current metrics in the Prometheus text exposition format."""
    from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

    data = reader.get_metrics_data()
    lines: list[str] = []
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                name = _prom_name(metric.name)
                points = metric.data
                if isinstance(points, Sum):
                    kind, suffix = ("counter", "_total") if points.is_monotonic else ("gauge", "")
                    lines.append(f"# TYPE {name}{suffix} {kind}")
                    lines += [f"{name}{suffix}{_labels(p.attributes)} {p.value}" for p in points.data_points]
                elif isinstance(points, Gauge):
                    lines.append(f"# TYPE {name} gauge")
                    lines += [f"{name}{_labels(p.attributes)} {p.value}" for p in points.data_points]
                elif isinstance(points, Histogram):
                    lines.append(f"# TYPE {name} histogram")
                    for p in points.data_points:
                        cumulative = 0
                        bounds = [*map(str, p.explicit_bounds), "+Inf"]
                        for bound, count in zip(bounds, p.bucket_counts, strict=False):
                            cumulative += count
                            lines.append(f"{name}_bucket{_labels(p.attributes, le=bound)} {cumulative}")
                        lines.append(f"{name}_sum{_labels(p.attributes)} {p.sum}")
                        lines.append(f"{name}_count{_labels(p.attributes)} {p.count}")
    return ("\n".join(lines) + "\n").encode()


def _prom_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_:" else "_" for c in name)


def _labels(attributes: Mapping[str, Any] | None, **extra: str) -> str:
    items: Iterable[tuple[str, Any]] = [*(attributes or {}).items(), *extra.items()]
    pairs = [f'{_prom_name(k)}="{_escape(str(v))}"' for k, v in items]
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
