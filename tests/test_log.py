from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from msp_runtime import get_logger
from msp_runtime import log as logs


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def configure(fmt: logs.Format, level: int = logging.INFO, project: str | None = "proj") -> io.StringIO:
    stream = io.StringIO()
    logs.configure(
        logs.LogSettings(
            level=level,
            format=fmt,
            service_name="svc",
            service_version="1.0",
            instance_id="inst-1",
            gcp_project=project,
        ),
        stream,
    )
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_gcp_has_cloud_logging_fields_and_trace_correlation() -> None:
    stream = configure("json_gcp")
    tracer = TracerProvider().get_tracer("t")
    log = get_logger("msp.start")
    with tracer.start_as_current_span("request") as span:
        log.warning("something odd", port=9992)
        ctx = span.get_span_context()
    log.info("outside a span")
    inside, outside = lines(stream)
    assert inside["severity"] == "WARNING"
    assert inside["message"] == "something odd"
    assert inside["scope"] == "msp.start"
    assert inside["port"] == 9992
    assert inside["logging.googleapis.com/trace"] == f"projects/proj/traces/{ctx.trace_id:032x}"
    assert inside["logging.googleapis.com/spanId"] == f"{ctx.span_id:016x}"
    assert inside["logging.googleapis.com/trace_sampled"] is True
    assert inside["time"].endswith("Z")
    assert outside["severity"] == "INFO"
    assert not any(k.startswith("logging.googleapis.com/") for k in outside)


def test_json_gcp_exception_carries_stack_trace_for_error_reporting() -> None:
    stream = configure("json_gcp")
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("service").exception("request failed")
    (entry,) = lines(stream)
    assert entry["severity"] == "ERROR"
    assert "ValueError: boom" in entry["stack_trace"]
    assert entry["serviceContext"] == {"service": "svc", "version": "1.0"}


def test_level_filters() -> None:
    stream = configure("json_gcp", level=logging.WARNING)
    log = get_logger("x")
    log.debug("no")
    log.info("no")
    log.error("yes")
    assert [entry["message"] for entry in lines(stream)] == ["yes"]


def test_stdlib_records_are_rendered_the_same_way() -> None:
    stream = configure("json_gcp")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42, extra={"color_message": "\x1b[1m"})
    (entry,) = lines(stream)
    assert entry["message"] == "Started server process [42]"
    assert entry["scope"] == "uvicorn.error"
    assert entry["severity"] == "INFO"
    assert "color_message" not in entry


def test_json_otel_shape_as_upstream() -> None:
    stream = configure("json")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        get_logger("msp.contract").error("bad", error="x")
        ctx = span.get_span_context()
    (entry,) = lines(stream)
    assert entry["SeverityText"] == "ERROR"
    assert entry["InstrumentationScope"] == "msp.contract"
    assert entry["Body"] == "bad"
    assert entry["Resource"] == {"service.name": "svc", "service.version": "1.0", "service.instance.id": "inst-1"}
    assert entry["TraceId"] == f"{ctx.trace_id:032x}"
    assert entry["Attributes"] == {"error": "x"}
    assert isinstance(entry["Timestamp"], int)


def test_console_is_readable_text() -> None:
    stream = configure("console")
    get_logger("msp.start").info("starting service", port=8080)
    text = stream.getvalue()
    assert "starting service" in text
    assert "port=8080" in text
    assert "scope=msp.start" in text
    assert not text.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("debug", logging.DEBUG),
        ("DBUG", logging.DEBUG),
        ("info", logging.INFO),
        ("warn", logging.WARNING),
        ("eror", logging.ERROR),
        ("crit", logging.CRITICAL),
        ("none", logging.CRITICAL + 10),
    ],
)
def test_parse_level(raw: str, level: int) -> None:
    assert logs.parse_level(raw) == level


def test_parse_level_and_format_reject_unknown() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        logs.parse_level("loud")
    with pytest.raises(ValueError, match="unknown log format"):
        logs.parse_format("xml")
    assert logs.parse_format("logfmt") == "json"
    assert logs.parse_format("condensed") == "console"
