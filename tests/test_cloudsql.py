"""The Cloud SQL path: the real connector, IAM auth and private IP, against a local Cloud SQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.oauth2.credentials import Credentials
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from msp_runtime import testing
from msp_runtime.postgresql import PostgreSQLContract

from .cloudsql_fake import LOGIN_TOKEN, FakeCloudSQL


@pytest.fixture
def cloudsql(tmp_path: Path) -> Iterator[FakeCloudSQL]:
    try:
        fake = FakeCloudSQL(tmp_path / "tls")
    except OSError as exc:
        pytest.skip(f"port 3307, which the connector hard-codes, is taken: {exc}")
    yield fake
    fake.close()


def contract_for(fake: FakeCloudSQL) -> PostgreSQLContract:
    contract = testing.service_contract(
        {"MSP": "true", "PGINSTANCE": "proj:us-central1:db", "PGUSER": "postgres", "DIAGNOSTICS_SECRET": "s"}
    ).postgresql
    credentials = Credentials(  # type: ignore[no-untyped-call]
        token=None,
        refresh_token="refresh",
        token_uri=f"{fake.api.url}/token",
        client_id="client",
        client_secret="secret",
    )
    options = {"credentials": credentials, "sqladmin_api_endpoint": fake.api.url}
    return dataclasses.replace(contract, connector_options=options)


def test_connects_with_iam_auth_over_the_private_ip(
    cloudsql: FakeCloudSQL, pg_database: str, spans: InMemorySpanExporter
) -> None:
    contract = contract_for(cloudsql)
    assert contract.uses_cloudsql
    try:
        with contract.connect(pg_database) as conn:
            assert conn.execute("SELECT current_database(), current_user").fetchone() == (pg_database, "postgres")
    finally:
        contract.close()
    paths = [r.path for r in cloudsql.api.requests]
    assert "/sql/v1beta4/projects/proj/instances/db/connectSettings" in paths
    # IAM database auth: the ephemeral certificate request carries the login-scoped token.
    (ephemeral,) = cloudsql.ephemeral_requests
    assert ephemeral["access_token"] == LOGIN_TOKEN
    assert ephemeral["public_key"].startswith("-----BEGIN")
    assert len(cloudsql.tls_clients) == 1  # reached 127.0.0.1 (PRIVATE), not 127.0.0.2 (PRIMARY)
    assert any(s.name == f"SELECT {pg_database}" for s in spans.get_finished_spans())


def test_pool_shares_one_connector_and_certificate(cloudsql: FakeCloudSQL, pg_database: str) -> None:
    contract = contract_for(cloudsql)
    pool = contract.open_pool(pg_database, min_size=2, max_size=2)
    try:
        pool.wait(20)
        with pool.connection() as a, pool.connection() as b:
            assert a.execute("SELECT 1").fetchone() == b.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()
        contract.close()
    assert len(cloudsql.tls_clients) == 2
    assert len(cloudsql.ephemeral_requests) == 1  # one connector, one refresh, unlike upstream's dialer per call


async def test_async_pool_over_the_connector(cloudsql: FakeCloudSQL, pg_database: str) -> None:
    contract = contract_for(cloudsql)
    pool = await contract.open_async_pool(pg_database, min_size=1)
    try:
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT current_database()")
            assert await cursor.fetchone() == (pg_database,)
            async with conn.transaction():
                await conn.execute("CREATE TABLE t (n int)")
                await conn.execute("INSERT INTO t VALUES (1)")
            cursor = await conn.execute("SELECT count(*) FROM t")
            assert await cursor.fetchone() == (1,)
    finally:
        await pool.close()
        contract.close()
