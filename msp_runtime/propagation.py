"""Reading Cloud Run's ``X-Cloud-Trace-Context`` header as a parent span context.

Cloud Run's front end sends it on every request. W3C ``traceparent`` is read after it, so
when both are present ``traceparent`` wins. Nothing is injected: outgoing requests carry
W3C headers only, as Google recommends now that its own propagator is deprecated.
"""

from __future__ import annotations

import re

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

__all__ = ["CloudTraceContextPropagator", "parse_cloud_trace", "parse_traceparent"]

HEADER = "x-cloud-trace-context"
_FORMAT = re.compile(r"^([0-9a-fA-F]{32})/([0-9]{1,20})(?:;o=([0-9]+))?$")


class CloudTraceContextPropagator(TextMapPropagator):
    """Extract-only propagator for ``X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=OPTIONS``."""

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        context = context if context is not None else Context()
        values = getter.get(carrier, HEADER)
        span_context = parse_cloud_trace(values[0]) if values else None
        if span_context is None:
            return context
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context), context)

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        return None

    @property
    def fields(self) -> set[str]:
        return {HEADER}


def parse_cloud_trace(value: str) -> trace.SpanContext | None:
    """The remote span context in an ``X-Cloud-Trace-Context`` value, or ``None`` if malformed."""
    match = _FORMAT.match(value.strip())
    if match is None:
        return None
    trace_id = int(match.group(1), 16)
    span_id = int(match.group(2))
    if trace_id == 0 or not 0 < span_id < 2**64:
        return None
    sampled = match.group(3) is not None and int(match.group(3)) & 1 == 1
    return _remote(trace_id, span_id, sampled)


_HEX = frozenset("0123456789abcdef")


def parse_traceparent(value: str) -> trace.SpanContext | None:
    """The remote span context in a W3C ``traceparent`` value, or ``None`` if malformed."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or (parts[0] == "00" and len(parts) != 4):
        return None
    version, trace_hex, span_hex, flags = parts[:4]
    if len(trace_hex) != 32 or len(span_hex) != 16 or len(flags) != 2:
        return None
    if not _HEX.issuperset(version + trace_hex + span_hex + flags):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return _remote(trace_id, span_id, int(flags, 16) & 1 == 1)


_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_NOT_SAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)


def _remote(trace_id: int, span_id: int, sampled: bool) -> trace.SpanContext:
    flags = _SAMPLED if sampled else _NOT_SAMPLED
    return trace.SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True, trace_flags=flags)
