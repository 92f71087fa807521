from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .support import FakeBigQuery, RecordingServer

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
_exporter = InMemorySpanExporter()


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()


@pytest.fixture
def sentry() -> Iterator[RecordingServer]:
    """A local server at the DSN's address that records Sentry envelopes."""
    server = RecordingServer()
    yield server
    server.close()


@pytest.fixture
def bigquery() -> Iterator[FakeBigQuery]:
    """A local BigQuery insertAll endpoint (see :class:`FakeBigQuery`)."""
    server = FakeBigQuery()
    yield server
    server.close()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans finished during the test, from a global tracer provider set once per session."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    _exporter.clear()
    yield _exporter
    _exporter.clear()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh database on the shared local PostgreSQL, dropped afterwards."""
    name = f"msp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
