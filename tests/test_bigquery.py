"""The BigQuery writer, driven through the real google-cloud-bigquery client against a local insertAll server."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic
import pytest

from msp_runtime import testing
from msp_runtime.bigquery import BigQueryNotConfiguredError, BigQueryWriteError, RowTooLargeError, TableWriter

from .support import FakeBigQuery, reject, status

INSERT_PATH = "/bigquery/v2/projects/proj/datasets/ds/tables/events/insertAll?prettyPrint=false"


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for the writer's background task to make ``condition`` true (the assertions follow)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 (state of another thread)
        await asyncio.sleep(0.02)


def writer_for(server: FakeBigQuery, **options: Any) -> TableWriter:
    contract = testing.service_contract(
        {"BIGQUERY_PROJECT_ID": "proj", "BIGQUERY_DATASET_ID": "ds", "BIGQUERY_EMULATOR_HOST": server.url}
    ).bigquery
    return contract.table_writer("events", backoff=0.01, **options)


@dataclass
class Event:
    name: str
    created_at: datetime.datetime
    metadata: dict[str, Any] | None = None


class PydanticEvent(pydantic.BaseModel):
    name: str
    count: int


NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)


async def test_rows_are_batched_into_insert_all(bigquery: FakeBigQuery) -> None:
    async with writer_for(bigquery, batch_size=3, flush_interval=60) as writer:
        await writer.write(*(Event(f"e{i}", NOW, {"i": i}) for i in range(7)))
        await writer.write(PydanticEvent(name="p", count=1), {"name": "m", "created_at": NOW})
    requests = [r for r in bigquery.requests if r.method == "POST"]
    assert {r.path for r in requests} == {INSERT_PATH}
    assert [len(json.loads(r.body)["rows"]) for r in requests] == [3, 3, 3]
    first = json.loads(requests[0].body)["rows"][0]
    assert first["json"] == {"name": "e0", "created_at": "2026-11-24T12:00:00+00:00", "metadata": {"i": 0}}
    assert len(first["insertId"]) == 36
    assert [r["json"]["name"] for r in bigquery.inserted] == [*(f"e{i}" for i in range(7)), "p", "m"]
    assert writer.rows_written == 9


async def test_background_flush_sends_without_being_asked(bigquery: FakeBigQuery) -> None:
    writer = writer_for(bigquery, flush_interval=0.1)
    await writer.write(Event("a", NOW))
    await eventually(lambda: bool(bigquery.inserted))
    assert [r["json"]["name"] for r in bigquery.inserted] == ["a"]
    await writer.close()


async def test_transient_errors_are_retried_with_the_same_insert_ids(bigquery: FakeBigQuery) -> None:
    bigquery.script = [status(503), status(500)]
    async with writer_for(bigquery, flush_interval=60) as writer:
        await writer.write(Event("a", NOW), Event("b", NOW))
    bodies = [json.loads(r.body) for r in bigquery.requests]
    assert len(bodies) == 3
    ids = [[row["insertId"] for row in body["rows"]] for body in bodies]
    assert ids[0] == ids[1] == ids[2]  # BigQuery de-duplicates the retry
    assert [r["json"]["name"] for r in bigquery.inserted] == ["a", "b"]


async def test_rejected_row_is_reported_and_the_others_are_still_written(bigquery: FakeBigQuery) -> None:
    bigquery.script = [reject(1)]
    writer = writer_for(bigquery, flush_interval=60)
    await writer.write(Event("good", NOW), Event("bad", NOW), Event("also good", NOW))
    with pytest.raises(BigQueryWriteError, match="1 row") as info:
        await writer.flush()
    (failed,) = info.value.failed
    assert failed.row["name"] == "bad"
    assert (failed.reason, failed.message) == ("invalid", "row 1: invalid")
    assert [r["json"]["name"] for r in bigquery.inserted] == ["good", "also good"]
    await writer.close()  # nothing left


async def test_rows_are_kept_when_bigquery_stays_down(bigquery: FakeBigQuery) -> None:
    bigquery.script = [status(503)] * 3
    writer = writer_for(bigquery, flush_interval=60, max_attempts=3)
    await writer.write(Event("a", NOW))
    with pytest.raises(BigQueryWriteError, match="1 row\\(s\\) still pending") as info:
        await writer.flush()
    assert info.value.pending == 1
    assert writer.buffered == 1
    await writer.close()  # BigQuery is back: the kept row goes out
    assert [r["json"]["name"] for r in bigquery.inserted] == ["a"]


async def test_permanent_http_error_fails_the_rows_loudly(bigquery: FakeBigQuery) -> None:
    bigquery.script = [status(404)]
    writer = writer_for(bigquery, flush_interval=60)
    await writer.write(Event("a", NOW))
    with pytest.raises(BigQueryWriteError) as info:
        await writer.close()
    assert [f.row["name"] for f in info.value.failed] == ["a"]
    assert len(bigquery.requests) == 1  # not retried


async def test_oversized_row_is_refused_at_write_time(bigquery: FakeBigQuery) -> None:
    writer = writer_for(bigquery, flush_interval=60, max_request_bytes=10_000)
    with pytest.raises(RowTooLargeError, match="over the 8976-byte limit"):
        await writer.write(Event("ok", NOW), Event("x" * 20_000, NOW))
    assert writer.buffered == 0  # all or nothing
    await writer.close()
    assert bigquery.requests == []


async def test_requests_are_split_to_stay_under_the_size_limit(bigquery: FakeBigQuery) -> None:
    async with writer_for(bigquery, flush_interval=60, max_request_bytes=10_000) as writer:
        await writer.write(*(Event("y" * 3_000, NOW) for _ in range(6)))
    assert [len(json.loads(r.body)["rows"]) for r in bigquery.requests] == [3, 3]  # 6 rows are ~18 kB
    assert max(len(r.body) for r in bigquery.requests) < 10_000
    assert len(bigquery.inserted) == 6


@pytest.mark.parametrize("row", [object(), {"when": object()}, {"n": float("nan")}])
async def test_unserialisable_rows_are_refused(bigquery: FakeBigQuery, row: Any) -> None:
    writer = writer_for(bigquery)
    with pytest.raises(TypeError, match="BigQuery"):
        await writer.write(row)
    await writer.close()


def test_not_configured_is_a_clear_error() -> None:
    with pytest.raises(BigQueryNotConfiguredError, match="BIGQUERY_PROJECT_ID"):
        testing.service_contract({"BIGQUERY_PROJECT_ID": "p"}).bigquery.table_writer("t")


async def test_cancelled_flush_keeps_the_rows_in_flight(bigquery: FakeBigQuery) -> None:
    import time as _time

    from .support import ok

    def slow(body: dict[str, Any]) -> Any:
        _time.sleep(0.5)
        return ok(body)

    bigquery.script = [slow]
    writer = writer_for(bigquery, flush_interval=60)
    await writer.write(Event("a", NOW))
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.1)
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert writer.buffered == 1  # not lost with the cancelled flush
    await writer.close()
    ids = {row["insertId"] for row in bigquery.inserted}
    assert len(ids) == 1  # sent twice at most, with one insert id BigQuery de-duplicates


async def test_an_outage_is_logged_as_an_error_once_not_every_flush(bigquery: FakeBigQuery) -> None:
    import structlog

    bigquery.script = [status(503)] * 6
    with structlog.testing.capture_logs() as logs:
        writer = writer_for(bigquery, flush_interval=0.05, max_attempts=1)
        await writer.write(Event("a", NOW))
        await eventually(lambda: bool(bigquery.inserted))
        await writer.close()
    assert [row["json"]["name"] for row in bigquery.inserted] == ["a"]  # kept through the outage
    assert len(bigquery.requests) == 7
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["BigQuery background flush failed"]
    assert any(entry["event"] == "BigQuery background flush recovered" for entry in logs)


async def test_rows_rejected_in_the_background_are_kept_for_close(bigquery: FakeBigQuery) -> None:
    bigquery.script = [reject(0)]
    writer = writer_for(bigquery, flush_interval=0.05)
    await writer.write(Event("bad", NOW))
    await eventually(lambda: bool(writer.failed_rows))
    assert [f.row["name"] for f in writer.failed_rows] == ["bad"]
    with pytest.raises(BigQueryWriteError) as info:
        await writer.close()
    assert [f.row["name"] for f in info.value.failed] == ["bad"]  # surfaced, not dropped
