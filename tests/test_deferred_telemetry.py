"""The metrics SDK and the OTLP exporters are loaded after startup, and nothing is lost meanwhile."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
import structlog
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult, NumberDataPoint
from opentelemetry.sdk.trace.export import SpanExportResult

from msp_runtime import _deferredmetrics, get_logger
from msp_runtime._deferredmetrics import DeferredMeterProvider
from msp_runtime._exporters import DeferredSpanExporter, deferred_metric_exporter

from .support import BASE_ENV, ROOT


def points(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Metric name -> {frozenset(attributes): value, sum or count}."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, Any] = {}
    for scope in data.resource_metrics[0].scope_metrics:
        for metric in scope.metrics:
            found[metric.name] = {
                frozenset((p.attributes or {}).items()): (
                    p.value
                    if isinstance(p, NumberDataPoint)
                    else (p.count, p.sum, list(getattr(p, "bucket_counts", [])))
                )
                for p in metric.data.data_points
            }
    return found


def measure(meter: Any, attributes: dict[str, Any]) -> None:
    meter.create_counter("c").add(2, attributes)
    attributes["route"] = "/changed"  # the caller reuses its dict: what was measured must not change
    meter.create_up_down_counter("u").add(-3)
    histogram = meter.create_histogram("h", explicit_bucket_boundaries_advisory=[1.0, 10.0])
    for value in (0.5, 5.0, 50.0):
        histogram.record(value, {"route": "/"})
    gauge = meter.create_gauge("g")
    gauge.set(1)
    gauge.set(7)  # the last value wins, so the replay must keep the order


def test_measurements_before_loading_are_replayed_as_if_the_sdk_had_been_there() -> None:
    direct_reader = InMemoryMetricReader()
    measure(MeterProvider(metric_readers=[direct_reader]).get_meter("m"), {"route": "/"})

    reader = InMemoryMetricReader()
    deferred = DeferredMeterProvider(lambda: MeterProvider(metric_readers=[reader]))
    meter = deferred.get_meter("m")
    measure(meter, {"route": "/"})
    meter.create_observable_gauge("o", callbacks=[lambda options: [Observation(42)]])
    assert not deferred.loaded

    deferred.load()
    expected = points(direct_reader)
    got = points(reader)
    assert got.pop("o") == {frozenset(): 42}
    assert got == expected
    assert got["c"] == {frozenset({("route", "/")}): 2}


def test_after_loading_instruments_record_directly() -> None:
    reader = InMemoryMetricReader()
    deferred = DeferredMeterProvider(lambda: MeterProvider(metric_readers=[reader]))
    early = deferred.get_meter("m").create_counter("c")
    early.add(1)
    deferred.load()
    early.add(1)
    late = deferred.get_meter("m").create_counter("late")
    late.add(5)
    assert type(late).__module__.startswith("opentelemetry.sdk")  # no wrapper once loaded
    assert points(reader)["c"] == {frozenset(): 2}
    assert points(reader)["late"] == {frozenset(): 5}


def test_an_invalid_instrument_is_refused_when_created_as_by_the_sdk_not_when_loading() -> None:
    reader = InMemoryMetricReader()
    deferred = DeferredMeterProvider(lambda: MeterProvider(metric_readers=[reader]))
    meter = deferred.get_meter("m")
    with pytest.raises(Exception, match="1 bad name"):
        MeterProvider().get_meter("m").create_counter("1 bad name")  # what the SDK does
    with pytest.raises(ValueError, match="1 bad name"):
        meter.create_counter("1 bad name")
    with pytest.raises(ValueError, match="63 characters"):
        meter.create_histogram("h", unit="x" * 64)
    meter.create_counter("good").add(1)
    deferred.load()
    assert points(reader)["good"] == {frozenset(): 1}


def test_an_instrument_the_sdk_refuses_at_load_time_costs_only_itself() -> None:
    reader = InMemoryMetricReader()
    sdk = MeterProvider(metric_readers=[reader])

    class Refusing:  # an SDK that refuses one instrument, which our checks let through
        def get_meter(self, *args: Any) -> Any:
            real = sdk.get_meter(*args)

            class Meter:
                def __getattr__(self, name: str) -> Any:
                    return getattr(real, name)

                def create_counter(self, name: str, *args: Any) -> Any:
                    if name == "refused":
                        raise RuntimeError("refused by the SDK")
                    return real.create_counter(name, *args)

            return Meter()

    deferred = DeferredMeterProvider(lambda: Refusing())  # type: ignore[arg-type, return-value]
    meter = deferred.get_meter("m")
    refused = meter.create_counter("refused")
    refused.add(1)
    meter.create_counter("kept").add(2)
    with structlog.testing.capture_logs() as logs:
        deferred.load()
    refused.add(1)  # dropped, not kept for a load that has happened
    assert refused._waiting == []  # type: ignore[attr-defined]
    assert points(reader) == {"kept": {frozenset(): 2}}
    assert [e["error"] for e in logs if e["log_level"] == "warning"] == ["refused by the SDK"]


def test_flushing_through_the_global_provider_loads_and_exports() -> None:
    reader = InMemoryMetricReader()
    deferred = DeferredMeterProvider(lambda: MeterProvider(metric_readers=[reader]))
    deferred.get_meter("m").create_counter("c").add(3)
    assert deferred.force_flush()
    assert points(reader)["c"] == {frozenset(): 3}
    deferred.shutdown()


def test_too_many_waiting_measurements_load_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_deferredmetrics, "MAX_PENDING", 10)
    reader = InMemoryMetricReader()
    deferred = DeferredMeterProvider(lambda: MeterProvider(metric_readers=[reader]))
    counter = deferred.get_meter("m").create_counter("c")
    for _ in range(10):
        counter.add(1)
    assert not deferred.loaded
    counter.add(1)
    assert deferred.loaded
    assert points(reader)["c"] == {frozenset(): 11}


def test_measurements_racing_the_load_are_all_counted() -> None:
    reader = InMemoryMetricReader()
    started = threading.Event()

    def build() -> MeterProvider:
        started.wait(5)  # measurements keep arriving while the SDK is being built
        return MeterProvider(metric_readers=[reader])

    deferred = DeferredMeterProvider(build)
    counter = deferred.get_meter("m").create_counter("c")

    def record() -> None:
        for i in range(20_000):
            counter.add(1)
            if i == 100:
                started.set()

    loader = threading.Thread(target=deferred.load)
    writers = [threading.Thread(target=record) for _ in range(2)]
    for t in [loader, *writers]:
        t.start()
    for t in [loader, *writers]:
        t.join()
    assert deferred.loaded
    assert points(reader)["c"] == {frozenset(): 40_000}


def test_observable_callbacks_run_only_once_loaded() -> None:
    calls: list[CallbackOptions] = []

    def observe(options: CallbackOptions) -> list[Observation]:
        calls.append(options)
        return [Observation(1)]

    reader = InMemoryMetricReader()
    deferred = DeferredMeterProvider(lambda: MeterProvider(metric_readers=[reader]))
    deferred.get_meter("m").create_observable_counter("o", callbacks=[observe])
    assert calls == []
    deferred.load()
    assert points(reader)["o"] == {frozenset(): 1}
    assert len(calls) == 1


def test_a_span_exporter_that_cannot_be_built_drops_batches_and_says_so_once() -> None:
    def broken() -> Any:
        raise RuntimeError("no credentials")

    with structlog.testing.capture_logs() as logs:
        exporter = DeferredSpanExporter(broken, get_logger("t"))
        assert exporter.export([]) is SpanExportResult.FAILURE
        assert exporter.export([]) is SpanExportResult.FAILURE
        exporter.shutdown()
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert [e["error"] for e in errors] == ["no credentials"]
    assert "span exporter" in errors[0]["event"]


def test_a_metric_exporter_is_built_on_its_first_export() -> None:
    built: list[int] = []

    class Real:
        def export(self, data: Any, timeout_millis: float = 0, **kwargs: Any) -> MetricExportResult:
            return MetricExportResult.SUCCESS

        def shutdown(self, timeout_millis: float = 0, **kwargs: Any) -> None:
            built.append(-1)

    def factory() -> Real:
        built.append(1)
        return Real()

    exporter = deferred_metric_exporter(factory, get_logger("t"))
    assert built == []
    assert exporter.export(None) is MetricExportResult.SUCCESS
    assert exporter.export(None) is MetricExportResult.SUCCESS
    exporter.shutdown()
    assert built == [1, -1]


def modules_after(code: str, env: dict[str, str]) -> dict[str, bool]:
    watched = ["opentelemetry.sdk.metrics", "opentelemetry.exporter.otlp.proto.http", "google.protobuf"]
    script = code + f"\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {watched!r}}}))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**BASE_ENV, **env}, cwd=ROOT, check=True
    )
    return dict(json.loads(out.stdout.splitlines()[-1]))


SETUP = textwrap.dedent(
    """
    from msp_runtime import testing
    from msp_runtime.telemetry import setup_telemetry
    contract = testing.service_contract(ENV)
    telemetry = setup_telemetry(
        contract.diagnostics.opentelemetry, service_name="s", service_version="1", environment_id="dev"
    )
    from opentelemetry import metrics
    metrics.get_meter("m").create_counter("c").add(1)
    """
)


@pytest.mark.parametrize("env", [{}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}])
def test_setup_leaves_the_metrics_sdk_and_exporters_for_later(env: dict[str, str]) -> None:
    loaded = modules_after(SETUP.replace("ENV", repr(env)), {})
    assert loaded == dict.fromkeys(loaded, False)


def test_metrics_endpoint_loads_the_sdk_and_shows_earlier_measurements() -> None:
    code = SETUP.replace("ENV", "{}") + "\nassert b'c_total 1' in telemetry.metrics_endpoint()\n"
    assert modules_after(code, {})["opentelemetry.sdk.metrics"]
