"""Traces, metrics, log correlation and Sentry, received over the wire from real processes."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from .support import RecordingServer, otlp_metrics, otlp_spans, running, sentry_items

CUSTOM = Path(__file__).parent / "services" / "custom_service.py"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def otel_env(receiver: RecordingServer, **extra: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "ENVIRONMENT_ID": "test", **extra}


def test_request_spans_and_metrics_are_exported_and_flushed_on_sigterm(recorder: RecordingServer) -> None:
    with running(otel_env(recorder)) as proc:
        assert httpx.get(proc.url + "/", headers={"traceparent": TRACEPARENT}).status_code == 200
        cloud_trace = "105445aa7843bc8bf206b12000100000/1234567890123;o=1"
        assert httpx.get(proc.url + "/-/healthz", headers={"x-cloud-trace-context": cloud_trace}).status_code == 200
        # Batching holds spans for 5 s and metrics for 30 s: only the shutdown flush delivers them now.
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0

    exported = otlp_spans(recorder)
    spans = {s["name"]: s for s in exported}
    root = spans["http.GET /"]
    assert (root["trace_id"], root["parent_span_id"]) == (TRACE_ID, PARENT_ID)
    assert root["kind"] == 2  # SERVER
    assert root["attributes"]["http.response.status_code"] == 200
    health = spans["http.GET /-/healthz"]
    assert health["trace_id"] == "105445aa7843bc8bf206b12000100000"
    assert health["parent_span_id"] == f"{1234567890123:016x}"
    resource = root["resource"]
    assert resource["service.name"] == "msp-example"
    assert resource["service.version"] == "0.0.0+dev"
    assert resource["deployment.environment.name"] == "test"
    assert len(resource["service.instance.id"]) == 36  # filled in, where upstream leaves it empty

    metrics = otlp_metrics(recorder)
    assert sum(p.as_int for p in metrics["request_count"]) == 1
    durations = metrics["http.server.request.duration"]
    # One duration per request, readiness probes on /-/version included: as many as spans.
    assert sum(p.count for p in durations) == len(exported) >= 3


def test_sampler_comes_from_the_environment(recorder: RecordingServer) -> None:
    with running(otel_env(recorder, OTEL_TRACES_SAMPLER="always_off")) as proc:
        httpx.get(proc.url + "/", headers={"traceparent": TRACEPARENT})
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    assert otlp_spans(recorder) == []
    assert "http.server.request.duration" in otlp_metrics(recorder)


def test_otel_sdk_disabled_exports_nothing(recorder: RecordingServer) -> None:
    with running(otel_env(recorder, OTEL_SDK_DISABLED="true")) as proc:
        httpx.get(proc.url + "/")
        assert httpx.get(proc.url + "/metrics").text == "Variable: 13"
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    assert recorder.requests == []
    assert "OpenTelemetry SDK integration disabled" in proc.err


def test_log_lines_carry_the_request_trace(recorder: RecordingServer) -> None:
    env = otel_env(recorder, CUSTOM_MODE="unhealthy", MSP="true", GOOGLE_CLOUD_PROJECT="proj", DIAGNOSTICS_SECRET="s")
    with running(env, script=CUSTOM) as proc:
        response = httpx.get(
            proc.url + "/-/healthz?deep=1",
            headers={"traceparent": TRACEPARENT, "authorization": "Bearer s"},
        )
        assert (response.status_code, response.text) == (500, "healthz: redis: connection refused")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    entry = next(e for e in proc.json_lines() if e["message"] == "service reported not healthy")
    assert entry["severity"] == "WARNING"
    assert entry["logging.googleapis.com/trace"] == f"projects/proj/traces/{TRACE_ID}"
    span = next(s for s in otlp_spans(recorder) if s["name"] == "http.GET /-/healthz")
    assert entry["logging.googleapis.com/spanId"] == span["span_id"]
    assert entry["query"] == "deep=1"


def test_error_logs_with_exceptions_reach_sentry_with_the_trace(sentry: RecordingServer) -> None:
    env = {"SENTRY_DSN": f"http://publickey@127.0.0.1:{sentry.port}/42", "ENVIRONMENT_ID": "prod"}
    with running(env, script=CUSTOM) as proc:
        assert httpx.get(proc.url + "/boom", headers={"traceparent": TRACEPARENT}).status_code == 500
        httpx.get(proc.url + "/")  # no error, no event
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    events = [payload for header, payload in sentry_items(sentry) if header["type"] == "event"]
    assert len(events) == 1
    (event,) = events
    assert event["exception"]["values"][-1]["type"] == "ZeroDivisionError"
    assert event["environment"] == "prod"
    assert event["release"] == "9.9.9"
    assert event["tags"]["scope"] == "service"
    assert event["contexts"]["trace"]["trace_id"] == TRACE_ID
    assert event["contexts"]["log"]["path"] == "/boom"
    assert all(r.headers["x-sentry-auth"].startswith("Sentry sentry_key=publickey") for r in sentry.requests)


def test_metrics_sdk_and_sentry_load_after_startup_and_count_every_request(
    recorder: RecordingServer, sentry: RecordingServer
) -> None:
    env = otel_env(recorder, SENTRY_DSN=f"http://publickey@127.0.0.1:{sentry.port}/42", SRC_LOG_LEVEL="debug")
    with running(env) as proc:
        assert httpx.get(proc.url + "/").status_code == 200
        deadline = time.monotonic() + 10
        while "loaded the metrics SDK and Sentry after startup" not in proc.err:
            assert time.monotonic() < deadline, proc.err
            time.sleep(0.05)
        assert httpx.get(proc.url + "/").status_code == 200
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    assert "failed to set up" not in proc.err
    assert sum(p.as_int for p in otlp_metrics(recorder)["request_count"]) == 2
    assert [h for h, _ in sentry_items(sentry) if h["type"] == "event"] == []  # loaded, and nothing to report
