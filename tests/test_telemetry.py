from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from msp_runtime import testing
from msp_runtime._httpmetrics import DURATION_BUCKETS, RequestMetrics, reader_class
from msp_runtime.propagation import CloudTraceContextPropagator
from msp_runtime.telemetry import Telemetry, render_prometheus


@pytest.mark.parametrize(
    ("header", "trace_id", "span_id", "sampled"),
    [
        ("105445aa7843bc8bf206b12000100000/1;o=1", 0x105445AA7843BC8BF206B12000100000, 1, True),
        (
            "105445aa7843bc8bf206b12000100000/18446744073709551615;o=0",
            0x105445AA7843BC8BF206B12000100000,
            2**64 - 1,
            False,
        ),
        ("105445AA7843BC8BF206B12000100000/42", 0x105445AA7843BC8BF206B12000100000, 42, False),
    ],
)
def test_cloud_trace_header_is_extracted(header: str, trace_id: int, span_id: int, sampled: bool) -> None:
    context = CloudTraceContextPropagator().extract({"x-cloud-trace-context": header})
    span_context = trace.get_current_span(context).get_span_context()
    assert (span_context.trace_id, span_context.span_id, span_context.trace_flags.sampled) == (
        trace_id,
        span_id,
        sampled,
    )
    assert span_context.is_remote


@pytest.mark.parametrize(
    "header",
    [
        "",
        "not-a-trace",
        "00000000000000000000000000000000/1;o=1",
        "105445aa7843bc8bf206b12000100000/0;o=1",
        "105445aa7843bc8bf206b12000100000/18446744073709551616",
        "105445aa7843bc8bf206b1200010000/1",
        "105445aa7843bc8bf206b12000100000/abc",
    ],
)
def test_malformed_cloud_trace_header_is_ignored(header: str) -> None:
    context = CloudTraceContextPropagator().extract({"x-cloud-trace-context": header})
    assert not trace.get_current_span(context).get_span_context().is_valid


def test_prometheus_rendering() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("m")
    meter.create_counter("request_count").add(3, {"route": 'a"b'})
    meter.create_up_down_counter("active").add(-2)
    histogram = meter.create_histogram("latency", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0])
    for value in (0.05, 0.5, 5.0):
        histogram.record(value)
    text = render_prometheus(reader).decode()
    assert '# TYPE request_count_total counter\nrequest_count_total{route="a\\"b"} 3' in text
    assert "# TYPE active gauge\nactive -2" in text
    assert 'latency_bucket{le="0.1"} 1\nlatency_bucket{le="1.0"} 2\nlatency_bucket{le="+Inf"} 3' in text
    assert "latency_sum 5.55" in text
    assert "latency_count 3" in text


class HangingExporter(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def test_shutdown_is_bounded_when_the_exporter_hangs() -> None:
    exporter = HangingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("s"):
        pass
    started = time.monotonic()
    Telemetry(tracer_provider=provider, meter_provider=MeterProvider()).shutdown(timeout=0.5)
    assert time.monotonic() - started < 2
    exporter.release.set()


def test_telemetry_config_from_env() -> None:
    config = testing.service_contract(
        {
            "GOOGLE_CLOUD_PROJECT": "p",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
    ).diagnostics.opentelemetry
    assert (config.gcp_project_id, config.sampler, config.sampler_arg) == ("p", "parentbased_traceidratio", 0.25)
    override = testing.service_contract({"GOOGLE_CLOUD_PROJECT": "p", "OTEL_GCP_PROJECT_ID": "q"})
    assert override.diagnostics.opentelemetry.gcp_project_id == "q"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        ({"OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"}, "OTEL_METRICS_EXEMPLAR_FILTER"),
    ],
)
def test_bad_sampler_settings_are_config_errors(env: dict[str, str], variable: str) -> None:
    from msp_runtime import ConfigError

    with pytest.raises(ConfigError) as info:
        testing.service_contract(env)
    assert info.value.variables == [variable]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, True),
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, False),
        ),
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
            (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, True),
        ),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),
        ("garbage", None),
    ],
)
def test_parse_traceparent(header: str, expected: tuple[int, int, bool] | None) -> None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from msp_runtime.propagation import parse_traceparent

    parsed = parse_traceparent(header)
    got = None if parsed is None else (parsed.trace_id, parsed.span_id, parsed.trace_flags.sampled)
    assert got == expected
    # Agrees with the SDK's W3C propagator, which the fast path replaces on the request path.
    reference = trace.get_current_span(TraceContextTextMapPropagator().extract({"traceparent": header}))
    ref = reference.get_span_context()
    assert (None if not ref.is_valid else (ref.trace_id, ref.span_id, ref.trace_flags.sampled)) == expected


async def test_unsampled_parent_gets_no_span_but_keeps_the_trace(spans: InMemorySpanExporter) -> None:
    import httpx

    from msp_runtime.instrumentation import instrument_asgi

    seen: list[trace.SpanContext] = []

    async def app(scope: object, receive: object, send: Any) -> None:
        seen.append(trace.get_current_span().get_span_context())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    metrics = RequestMetrics(Resource.create({}))
    transport = httpx.ASGITransport(app=instrument_asgi(app, metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        await client.get("/a", headers={"traceparent": unsampled})
        await client.get("/b", headers={"traceparent": unsampled[:-2] + "01"})
        await client.get("/c")
    assert [s.name for s in spans.get_finished_spans()] == ["http.GET /b", "http.GET /c"]
    assert seen[0].trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736  # logs still correlate
    assert not seen[0].trace_flags.sampled
    assert seen[1].trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert seen[1].trace_flags.sampled
    histogram = metrics.histogram()
    assert histogram is not None
    assert isinstance(histogram.data, Histogram)
    (point,) = histogram.data.data_points
    assert point.count == 3  # every request is counted, sampled or not
    assert dict(point.attributes or {}) == {"http.request.method": "GET", "http.response.status_code": 200}
    assert metrics.active == 0


def test_request_histogram_matches_the_sdk_histogram() -> None:
    """The request path's cheap histogram aggregates exactly as the SDK's would."""
    values = [0.0, 0.005, 0.0050001, 0.02, 0.1, 0.3, 7.5, 12.0, 0.001]
    reader = InMemoryMetricReader()
    sdk = (
        MeterProvider(metric_readers=[reader])
        .get_meter("m")
        .create_histogram("d", explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
    )
    ours = RequestMetrics(Resource.create({}))
    for v in values:
        sdk.record(v, {"http.request.method": "GET", "http.response.status_code": 200})
        ours.record(v, "GET", 200)
    data = reader.get_metrics_data()
    assert data is not None
    expected = data.resource_metrics[0].scope_metrics[0].metrics[0].data
    got = ours.histogram()
    assert got is not None
    assert isinstance(expected, Histogram)
    assert isinstance(got.data, Histogram)
    (e,), (g,) = expected.data_points, got.data.data_points
    assert (g.count, g.sum, g.min, g.max) == (e.count, e.sum, e.min, e.max)
    assert list(g.bucket_counts) == list(e.bucket_counts)
    assert list(g.explicit_bounds) == list(e.explicit_bounds)


def test_readers_merge_request_metrics_into_every_collection() -> None:
    resource = Resource.create({"service.name": "svc"})
    ours = RequestMetrics(resource)
    reader = reader_class(InMemoryMetricReader)(request_metrics=ours)
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    ours.register(provider.get_meter("msp_runtime.http"))
    ours.record(0.02, "POST", 201)
    ours.active = 2
    text = render_prometheus(reader).decode()
    assert 'http_server_request_duration_count{http_request_method="POST",http_response_status_code="201"} 1' in text
    assert "http_server_active_requests 2" in text
    provider.shutdown()
