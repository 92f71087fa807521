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

__all__ = ["CloudTraceContextPropagator"]

HEADER = "x-cloud-trace-context"
_FORMAT = re.compile(r"^([0-9a-fA-F]{32})/([0-9]{1,20})(?:;o=([0-9]+))?$")


class CloudTraceContextPropagator(TextMapPropagator):
    """Extract-only propagator for ``X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=OPTIONS``."""

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        context = context if context is not None else Context()
        values = getter.get(carrier, HEADER)
        if not values:
            return context
        match = _FORMAT.match(values[0].strip())
        if match is None:
            return context
        trace_id = int(match.group(1), 16)
        span_id = int(match.group(2))
        if trace_id == 0 or not 0 < span_id < 2**64:
            return context
        sampled = match.group(3) is not None and int(match.group(3)) & 1 == 1
        span_context = trace.SpanContext(
            trace_id=trace_id,
            span_id=span_id,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT),
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context), context)

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        return None

    @property
    def fields(self) -> set[str]:
        return {HEADER}
