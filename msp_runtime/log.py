"""Structured logging with structlog, in the formats Cloud Logging and developers read.

Formats (``SRC_LOG_FORMAT``, as upstream's ``sourcegraph/log``):

- ``json_gcp``: one JSON object per line with Cloud Logging's special fields
  (``severity``, ``message``, ``time``, ``logging.googleapis.com/trace``,
  ``logging.googleapis.com/spanId``, ``logging.googleapis.com/trace_sampled``), so
  Cloud Logging sets the severity and links the line to its trace. Default when ``MSP``.
- ``json``: the OpenTelemetry log data model upstream writes (``Timestamp``,
  ``SeverityText``, ``InstrumentationScope``, ``Body``, ``Resource``, ``Attributes``).
- ``console``: readable lines for a terminal. Default in local development.

Logs go to stderr. Records from the standard library's ``logging`` (uvicorn, psycopg,
the Google clients …) are rendered the same way.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = ["LogSettings", "Logger", "configure", "get_logger", "parse_level"]

Logger = FilteringBoundLogger
Format = Literal["json", "json_gcp", "console"]

_LEVELS = {
    "debug": logging.DEBUG,
    "dbug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "eror": logging.ERROR,
    "crit": logging.CRITICAL,
    "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}
_FORMATS: dict[str, Format] = {
    "json": "json",
    "logfmt": "json",
    "json_gcp": "json_gcp",
    "console": "console",
    "condensed": "console",
}
_GCP_SEVERITY = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "warn": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
    "fatal": "CRITICAL",
}
_OTEL_SEVERITY = {"warning": "WARN", "exception": "ERROR", "critical": "FATAL"}


def parse_level(value: str) -> int:
    """Map an ``SRC_LOG_LEVEL`` value to a :mod:`logging` level; raise ``ValueError`` if unknown."""
    try:
        return _LEVELS[value.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {value!r}; expected debug, info, warn, error or none") from None


def parse_format(value: str) -> Format:
    """Map an ``SRC_LOG_FORMAT`` value to a format; raise ``ValueError`` if unknown."""
    try:
        return _FORMATS[value.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log format {value!r}; expected json, json_gcp or console") from None


@dataclass(frozen=True)
class LogSettings:
    """What :func:`configure` needs: level, format and the resource to stamp on lines."""

    level: int = logging.INFO
    format: Format = "console"
    service_name: str = "unknown_service"
    service_version: str = ""
    instance_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    gcp_project: str | None = None


def get_logger(scope: str) -> Logger:
    """A logger whose lines carry ``scope`` (``msp.start``, ``service.db`` …).

    Safe to call at import time: the logger takes its configuration when first used.
    """
    return cast(Logger, structlog.get_logger(scope=scope))


def _add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    from opentelemetry import trace  # the API is cheap and already imported by telemetry

    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
        event_dict.setdefault("trace_sampled", ctx.trace_flags.sampled)
    return event_dict


def _gcp_renderer(settings: LogSettings) -> Processor:
    trace_prefix = f"projects/{settings.gcp_project}/traces/" if settings.gcp_project else ""
    service_context = {"service": settings.service_name, "version": settings.service_version}

    def render(_: WrappedLogger, method: str, event_dict: EventDict) -> str:
        level = str(event_dict.pop("level", method))
        out: dict[str, Any] = {
            "severity": _GCP_SEVERITY.get(level, "DEFAULT"),
            "message": event_dict.pop("event", ""),
            "time": event_dict.pop("timestamp", None) or _rfc3339(time.time()),
        }
        trace_id = event_dict.pop("trace_id", None)
        if trace_id:
            out["logging.googleapis.com/trace"] = trace_prefix + trace_id
            out["logging.googleapis.com/spanId"] = event_dict.pop("span_id", "")
            out["logging.googleapis.com/trace_sampled"] = event_dict.pop("trace_sampled", False)
        stack = event_dict.pop("exception", None)
        if stack:
            # Error Reporting groups entries that carry a stack trace and a serviceContext.
            out["stack_trace"] = stack
            out["serviceContext"] = service_context
        out.update(event_dict)
        return json.dumps(out, default=str)

    return render


def _otel_renderer(settings: LogSettings) -> Processor:
    resource = {
        "service.name": settings.service_name,
        "service.version": settings.service_version,
        "service.instance.id": settings.instance_id,
    }

    def render(_: WrappedLogger, method: str, event_dict: EventDict) -> str:
        level = str(event_dict.pop("level", method))
        event_dict.pop("timestamp", None)
        out: dict[str, Any] = {
            "Timestamp": time.time_ns(),
            "SeverityText": _OTEL_SEVERITY.get(level, level.upper()),
            "InstrumentationScope": event_dict.pop("scope", ""),
            "Body": event_dict.pop("event", ""),
            "Resource": resource,
        }
        if "trace_id" in event_dict:
            out["TraceId"] = event_dict.pop("trace_id")
            out["SpanId"] = event_dict.pop("span_id", "")
            event_dict.pop("trace_sampled", None)
        out["Attributes"] = event_dict
        return json.dumps(out, default=str)

    return render


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


_extra_processors: list[Processor] = []


def add_processor(processor: Processor) -> None:
    """Run ``processor`` on every entry before it is rendered (used by the Sentry bridge)."""
    _extra_processors.append(processor)


def _run_extra(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    for processor in _extra_processors:
        event_dict = cast(EventDict, processor(logger, method, event_dict))
    return event_dict


def configure(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library's root logger to write ``settings.format``."""
    stream = stream or sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_trace_context,
        _run_extra,
    ]
    renderer: Processor
    if settings.format == "console":
        shared.insert(0, structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False))
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        shared.append(structlog.processors.format_exc_info)
        renderer = _gcp_renderer(settings) if settings.format == "json_gcp" else _otel_renderer(settings)

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(settings.level),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_from_stdlib, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)


def _from_stdlib(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict["scope"] = record.name
    event_dict.pop("color_message", None)  # uvicorn's ANSI duplicate of the message
    return event_dict
