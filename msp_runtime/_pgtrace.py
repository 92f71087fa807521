"""Traced psycopg cursors: one client span per ``execute``/``executemany``."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from .log import get_logger

_TEXT_LIMIT = 2048
_tracer = trace.get_tracer("msp_runtime.postgresql")


def _query_text(query: Any, context: Any) -> str:
    if isinstance(query, bytes):
        return query.decode(errors="replace")
    if isinstance(query, str):
        return query
    try:
        return str(query.as_string(context))
    except Exception:
        return type(query).__name__


@contextmanager
def _span(database: str, query: Any, context: Any, query_logging: bool) -> Iterator[Span]:
    text = _query_text(query, context)
    operation = text.split(None, 1)[0].upper() if text.strip() else "QUERY"
    if query_logging:
        get_logger(f"postgresql.querylog.{database}").debug("postgresql query", query=text)
    with _tracer.start_as_current_span(
        f"{operation} {database}",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system.name": "postgresql",
            "db.namespace": database,
            "db.operation.name": operation,
            "db.query.text": text[:_TEXT_LIMIT],
        },
    ) as span:
        yield span


@functools.cache
def cursor_class(database: str, query_logging: bool) -> type[psycopg.Cursor[Any]]:
    """A :class:`psycopg.Cursor` that traces each statement against ``database``."""

    class TracedCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            with _span(database, query, self, query_logging) as span:
                result = super().execute(query, params, **kwargs)
                if span.is_recording():
                    span.set_attribute("db.response.returned_rows", self.rowcount)
                return result

        def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
            with _span(database, query, self, query_logging):
                super().executemany(query, params_seq, **kwargs)

    return TracedCursor


@functools.cache
def async_cursor_class(database: str, query_logging: bool) -> type[psycopg.AsyncCursor[Any]]:
    """The asyncio twin of :func:`cursor_class`."""

    class TracedAsyncCursor(psycopg.AsyncCursor[Any]):
        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            with _span(database, query, self, query_logging) as span:
                result = await super().execute(query, params, **kwargs)
                if span.is_recording():
                    span.set_attribute("db.response.returned_rows", self.rowcount)
                return result

        async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
            with _span(database, query, self, query_logging):
                await super().executemany(query, params_seq, **kwargs)

    return TracedAsyncCursor
