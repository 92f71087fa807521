"""The example service and job with every backend configured, as real processes, including faults."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from .support import FakeBigQuery, TCPProxy, free_port, redis_server, running, spawn


@pytest.fixture
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


def backend_env(database: str, redis_port: int, bigquery: FakeBigQuery, pg_port: int = 5432) -> dict[str, str]:
    return {
        "PGDSN": f"host=127.0.0.1 port={pg_port} user=postgres dbname={database} connect_timeout=2",
        "REDIS_ENDPOINT": f"redis://127.0.0.1:{redis_port}/0",
        "BIGQUERY_PROJECT_ID": "proj",
        "BIGQUERY_DATASET_ID": "ds",
        "BIGQUERY_EMULATOR_HOST": bigquery.url,
    }


def bigquery_names(bigquery: FakeBigQuery) -> list[str]:
    return [row["json"]["name"] for row in bigquery.inserted]


def wait_healthy(url: str, timeout: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url + "/-/healthz", timeout=5)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_service_uses_every_backend(pg_database: str, redis_port: int, bigquery: FakeBigQuery) -> None:
    with running(backend_env(pg_database, redis_port, bigquery)) as proc:
        first = httpx.post(proc.url + "/events", params={"name": "signup"}).json()
        assert first["postgresql"] == {"id": 1}
        assert first["redis"] == {"count": 1}
        httpx.post(proc.url + "/events", params={"name": "login"})
        listed = httpx.get(proc.url + "/events").json()
        assert listed["postgresql"] == [{"id": 2, "name": "login"}, {"id": 1, "name": "signup"}]
        assert listed["redis"] == {"count": 2}
        assert httpx.post(proc.url + "/events").status_code == 400
        health = httpx.get(proc.url + "/-/healthz")
        assert (health.status_code, health.text) == (200, "healthz: ok")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    assert "postgresql connection success" in proc.err
    assert "redis connection success" in proc.err
    # The writer is flushed on shutdown: nothing buffered is lost.
    names = bigquery_names(bigquery)
    assert names.count("example.recorded") == 2
    assert "service.initialized" in names
    assert "service.healthy" in names


def test_postgresql_down_at_start_is_reported_then_recovers(
    pg_database: str, redis_port: int, bigquery: FakeBigQuery
) -> None:
    proxy = TCPProxy(5432)
    proxy.cut()  # PostgreSQL "down" when the service starts
    try:
        with running(backend_env(pg_database, redis_port, bigquery, pg_port=proxy.port)) as proc:
            health = httpx.get(proc.url + "/-/healthz", timeout=10)
            assert health.status_code == 500
            assert health.text.startswith("healthz: postgresql: ")
            assert "redis" not in health.text  # the other backends are fine
            assert "postgresql unavailable" in proc.err
            proxy.start()
            recovered = wait_healthy(proc.url)  # the migrations routine retries every 5 s
            assert (recovered.status_code, recovered.text) == (200, "healthz: ok")
            assert httpx.post(proc.url + "/events", params={"name": "late"}).json()["postgresql"] == {"id": 1}
    finally:
        proxy.close()


def test_redis_lost_mid_run_and_back(pg_database: str, redis_port: int, bigquery: FakeBigQuery) -> None:
    proxy = TCPProxy(redis_port)
    try:
        with running(backend_env(pg_database, proxy.port, bigquery)) as proc:
            assert wait_healthy(proc.url).status_code == 200
            proxy.cut()
            health = httpx.get(proc.url + "/-/healthz", timeout=10)  # answers: no hang past the check timeout
            assert health.status_code == 500
            assert health.text.startswith("healthz: redis: ")
            proxy.start()
            assert wait_healthy(proc.url).status_code == 200
    finally:
        proxy.close()


def test_bigquery_rejecting_rows_makes_health_fail_naming_it(
    pg_database: str, redis_port: int, bigquery: FakeBigQuery
) -> None:
    from .support import reject

    with running(backend_env(pg_database, redis_port, bigquery)) as proc:
        assert wait_healthy(proc.url).status_code == 200
        bigquery.script = [reject(0)]
        health = httpx.get(proc.url + "/-/healthz")
        assert health.status_code == 500
        assert health.text.startswith("healthz: bigquery: BigQuery proj.ds.example: 1 row(s) rejected")


def test_job_summarises_the_backends(pg_database: str, redis_port: int, bigquery: FakeBigQuery) -> None:
    env = backend_env(pg_database, redis_port, bigquery)
    with running(env) as proc:
        for name in ("a", "b", "c"):
            httpx.post(proc.url + "/events", params={"name": name})
    job = spawn(env, args=("job",))
    assert job.wait(30) == 0, job.err
    summary = next(row["json"] for row in bigquery.inserted if row["json"]["name"] == "job.summary")
    metadata = summary["metadata"]
    assert (metadata["events"], metadata["counter"]) == (3, 3)


def test_job_fails_when_postgresql_is_down(redis_port: int, bigquery: FakeBigQuery) -> None:
    env = backend_env("nowhere", redis_port, bigquery, pg_port=free_port())
    job = spawn(env, args=("job",))
    assert job.wait(30) == 1
    assert "postgresql is unavailable" in job.err
    assert "job execution failed" in job.err
