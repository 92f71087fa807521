"""BigQuery: a batching, retrying writer for streaming inserts (``insertAll``).

:meth:`BigQueryContract.table_writer` returns a :class:`TableWriter` for a table of the
service's dataset. Rows (dataclasses, pydantic models or mappings) are converted to JSON
when written, so a row that cannot be sent (not serialisable, over the size limit) is
refused right there. Buffered rows are sent in batches, in the background and on
:meth:`~TableWriter.flush`/:meth:`~TableWriter.close`; transient failures are retried
with the same insert ids (BigQuery de-duplicates them); rows BigQuery rejects are kept,
with its reasons, and raised as :class:`BigQueryWriteError`. No row is dropped silently.

``google.cloud.bigquery`` is imported on first use only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import decimal
import enum
import json
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .env import Env
from .log import Logger, get_logger

if TYPE_CHECKING:
    from google.cloud import bigquery

__all__ = [
    "BigQueryContract",
    "BigQueryNotConfiguredError",
    "BigQueryWriteError",
    "FailedRow",
    "RowTooLargeError",
    "TableWriter",
]

MAX_REQUEST_BYTES = 9 * 1024 * 1024
"""BigQuery refuses ``insertAll`` requests over 10 MB; this leaves room for the envelope."""


class BigQueryNotConfiguredError(RuntimeError):
    def __init__(self) -> None:
        super().__init__("BIGQUERY_PROJECT_ID or BIGQUERY_DATASET_ID not set")


class RowTooLargeError(ValueError):
    """A row whose JSON is larger than one request may carry."""

    def __init__(self, table: str, size: int, limit: int) -> None:
        self.table, self.size, self.limit = table, size, limit
        super().__init__(f"row for {table} is {size} bytes as JSON, over the {limit}-byte limit")


@dataclass(frozen=True)
class FailedRow:
    """A row BigQuery did not take, with why."""

    row: dict[str, Any]
    insert_id: str
    reason: str
    message: str


class BigQueryWriteError(RuntimeError):
    """Rows that could not be written; they are in ``failed`` (rejected) and ``pending`` (to retry)."""

    def __init__(self, table: str, failed: Sequence[FailedRow], pending: int) -> None:
        self.table = table
        self.failed = list(failed)
        self.pending = pending
        parts = []
        if failed:
            reasons = sorted({f"{f.reason}: {f.message}" for f in failed})
            parts.append(f"{len(failed)} row(s) rejected ({'; '.join(reasons[:3])})")
        if pending:
            parts.append(f"{pending} row(s) still pending after retries")
        super().__init__(f"BigQuery {table}: " + ", ".join(parts))


@dataclass
class _ClientState:
    client: Any = None


@dataclass(frozen=True, kw_only=True)
class BigQueryContract:
    """The service's BigQuery dataset: ``BIGQUERY_PROJECT_ID`` and ``BIGQUERY_DATASET_ID``."""

    project_id: str | None
    dataset_id: str | None
    emulator_host: str | None = None
    """``BIGQUERY_EMULATOR_HOST``: a local endpoint (local development and tests), no credentials."""
    _state: _ClientState = field(default_factory=_ClientState, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Env) -> BigQueryContract:
        project = env.get_optional("BIGQUERY_PROJECT_ID", "BigQuery project ID")
        dataset = env.get_optional("BIGQUERY_DATASET_ID", "BigQuery dataset ID")
        emulator = env.get_optional("BIGQUERY_EMULATOR_HOST", "local BigQuery endpoint, e.g. http://127.0.0.1:9050")
        return cls(project_id=project or None, dataset_id=dataset or None, emulator_host=emulator or None)

    @property
    def configured(self) -> bool:
        return self.project_id is not None and self.dataset_id is not None

    def client(self) -> bigquery.Client:
        """The process's BigQuery client (one, unlike upstream's client per writer)."""
        if not self.configured:
            raise BigQueryNotConfiguredError()
        if self._state.client is None:
            from google.cloud import bigquery

            if self.emulator_host:
                from google.api_core.client_options import ClientOptions
                from google.auth.credentials import AnonymousCredentials

                self._state.client = bigquery.Client(
                    project=self.project_id,
                    credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                    client_options=ClientOptions(api_endpoint=self.emulator_host),
                )
            else:
                self._state.client = bigquery.Client(project=self.project_id)
        client: bigquery.Client = self._state.client
        return client

    def table_writer(self, table: str, **options: Any) -> TableWriter:
        """A :class:`TableWriter` for ``table`` in the service's dataset."""
        return TableWriter(self.client(), f"{self.project_id}.{self.dataset_id}.{table}", **options)

    def close(self) -> None:
        client, self._state.client = self._state.client, None
        if client is not None:
            client.close()


@dataclass
class _Row:
    json: dict[str, Any]
    insert_id: str
    size: int


_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RETRY_REASONS = frozenset({"stopped", "timeout", "backendError", "internalError"})


class TableWriter:
    """Batches rows for one table and streams them with ``insertAll``.

    Use it as an async context manager, or call :meth:`close` at shutdown: it flushes
    what is buffered and raises :class:`BigQueryWriteError` if anything could not be
    written.
    """

    def __init__(
        self,
        client: bigquery.Client,
        table: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffered: int = 10_000,
        max_attempts: int = 5,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        request_timeout: float = 30.0,
        backoff: float = 0.2,
        logger: Logger | None = None,
    ) -> None:
        self.table = table
        self._client = client
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_buffered = max_buffered
        self._max_attempts = max_attempts
        self._max_request_bytes = max_request_bytes
        self._max_row_bytes = max_request_bytes - 1024
        self._timeout = request_timeout
        self._backoff = backoff
        self._log = logger or get_logger("msp.bigquery.writer")
        self._buffer: list[_Row] = []
        self._failed: list[FailedRow] = []
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failing = False
        self.rows_written = 0

    # -- public API --------------------------------------------------------------------

    async def write(self, *rows: Any) -> None:
        """Convert and buffer ``rows``; raises ``TypeError`` or :class:`RowTooLargeError` for a bad row.

        Either every row is buffered or, if one is bad, none is.
        """
        if self._closed:
            raise RuntimeError(f"writer for {self.table} is closed")
        if not rows:
            raise ValueError("no values to insert")
        converted = [self._convert(row) for row in rows]
        self._buffer.extend(converted)
        self._ensure_background_flush()
        if len(self._buffer) >= self._batch_size:
            self._wakeup.set()
        if len(self._buffer) >= self._max_buffered:
            await self.flush()  # back-pressure rather than unbounded memory

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def failed_rows(self) -> list[FailedRow]:
        """Rows BigQuery rejected so far (kept until :meth:`take_failed`)."""
        return list(self._failed)

    def take_failed(self) -> list[FailedRow]:
        failed, self._failed = self._failed, []
        return failed

    async def flush(self) -> None:
        """Send everything buffered; raise :class:`BigQueryWriteError` for rows not written.

        Rejected rows are raised once; rows that hit retry limits stay buffered for the
        next flush.
        """
        async with self._lock:
            await self._send_buffered()
            failed = self.take_failed()
            if failed or self._buffer:
                raise BigQueryWriteError(self.table, failed, len(self._buffer))

    async def close(self) -> None:
        """Stop the background flush (letting a send in progress finish) and flush what remains."""
        self._closed = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
            self._task = None
        await self.flush()

    async def __aenter__(self) -> TableWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ---------------------------------------------------------------------

    def _convert(self, row: Any) -> _Row:
        data = _to_json_object(row)
        size = len(json.dumps(data, separators=(",", ":"), allow_nan=False).encode())
        if size > self._max_row_bytes:
            raise RowTooLargeError(self.table, size, self._max_row_bytes)
        return _Row(data, str(uuid.uuid4()), size)

    def _ensure_background_flush(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._flush_interval)
            self._wakeup.clear()
            if self._closed or not self._buffer:
                continue
            try:
                await self.flush()
            except Exception as exc:
                if isinstance(exc, BigQueryWriteError):
                    self._failed = exc.failed + self._failed  # keep them for the caller
                # Once per outage, not once a second: error logs also become Sentry events.
                log = self._log.debug if self._failing else self._log.error
                log("BigQuery background flush failed", table=self.table, error=str(exc))
                self._failing = True
            else:
                if self._failing:
                    self._log.info("BigQuery background flush recovered", table=self.table)
                self._failing = False

    async def _send_buffered(self) -> None:
        pending, self._buffer = self._buffer, []
        batches = self._batches(pending)
        retry_later: list[_Row] = []
        sent = 0
        try:
            for batch in batches:
                retry_later += await asyncio.to_thread(self._insert, batch)
                sent += 1
        finally:
            # Cancelled mid-way: the batch in flight is kept too (its insert ids de-duplicate a resend).
            unsent = [row for batch in batches[sent:] for row in batch]
            self._buffer = retry_later + unsent + self._buffer

    def _batches(self, rows: list[_Row]) -> list[list[_Row]]:
        batches: list[list[_Row]] = []
        current: list[_Row] = []
        size = 0
        for row in rows:
            if current and (len(current) >= self._batch_size or size + row.size > self._max_request_bytes):
                batches.append(current)
                current, size = [], 0
            current.append(row)
            size += row.size + 64  # insertId and framing
        if current:
            batches.append(current)
        return batches

    def _insert(self, batch: list[_Row]) -> list[_Row]:
        """Insert ``batch``, retrying what may succeed later; return rows still pending."""
        from google.api_core import exceptions

        attempt = 0
        while batch:
            attempt += 1
            try:
                errors = self._client.insert_rows_json(
                    self.table,
                    [r.json for r in batch],
                    row_ids=[r.insert_id for r in batch],
                    retry=None,  # type: ignore[arg-type]  # we retry ourselves, boundedly
                    timeout=self._timeout,
                )
            except exceptions.GoogleAPICallError as exc:
                code = getattr(exc, "code", None)
                if code in _TRANSIENT_STATUS and attempt < self._max_attempts:
                    self._sleep(attempt)
                    continue
                if code in _TRANSIENT_STATUS:
                    self._log.warning("BigQuery insert failed after retries", table=self.table, error=str(exc))
                    return batch
                self._failed += [FailedRow(r.json, r.insert_id, str(exc.reason or code), exc.message) for r in batch]
                return []
            except Exception as exc:  # unreachable, requests' errors, anything unexpected: keep the rows
                if attempt < self._max_attempts:
                    self._sleep(attempt)
                    continue
                self._log.warning("BigQuery insert failed after retries", table=self.table, error=str(exc))
                return batch
            batch = self._handle_row_errors(batch, errors)
            if batch and attempt >= self._max_attempts:
                return batch
        return []

    def _handle_row_errors(self, batch: list[_Row], errors: Sequence[Mapping[str, Any]]) -> list[_Row]:
        """Record rejected rows; return the rows to send again (those BigQuery only stopped)."""
        by_index = {int(e["index"]): e.get("errors", []) for e in errors}
        again: list[_Row] = []
        for index, row in enumerate(batch):
            row_errors = by_index.get(index)
            if row_errors is None:
                self.rows_written += 1
                continue
            reasons = {str(e.get("reason", "")) for e in row_errors}
            if reasons <= _RETRY_REASONS:
                again.append(row)
            else:
                problem = next(e for e in row_errors if e.get("reason") not in _RETRY_REASONS)
                self._failed.append(
                    FailedRow(row.json, row.insert_id, str(problem.get("reason")), str(problem.get("message", "")))
                )
        return again

    def _sleep(self, attempt: int) -> None:
        time.sleep(self._backoff * (2 ** (attempt - 1)) * (0.5 + random.random()))


def _to_json_object(row: Any) -> dict[str, Any]:
    is_dataclass = dataclasses.is_dataclass(row) and not isinstance(row, type)
    if not (is_dataclass or hasattr(row, "model_dump") or isinstance(row, Mapping)):
        raise TypeError(f"cannot write {type(row).__name__} to BigQuery: use a dataclass, pydantic model or mapping")
    converted = _to_json_value(row)
    assert isinstance(converted, dict)
    return converted


def _to_json_value(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"cannot write {value!r} to BigQuery: not a finite number")
        return value
    if isinstance(value, Mapping):
        return {str(k): _to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_to_json_value(v) for v in value]
    if isinstance(value, datetime.date | datetime.time):  # datetimes included
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, enum.Enum):
        return _to_json_value(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _to_json_value({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot write {type(value).__name__} to BigQuery")
