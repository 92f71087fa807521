"""Redis against real servers: the shared one, and throwaway ones for TLS and faults."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from msp_runtime import testing
from msp_runtime.redis import RedisContract, RedisNotConfiguredError

from .support import TCPProxy, free_port, make_tls, redis_server


def contract_for(endpoint: str, **env: str) -> RedisContract:
    return testing.service_contract({"REDIS_ENDPOINT": endpoint, **env}).redis


def test_sync_client_against_the_shared_server(spans: InMemorySpanExporter) -> None:
    client = contract_for("redis://127.0.0.1:6379/0").client()
    key = f"msp-test:{uuid.uuid4().hex}"
    try:
        assert client.set(key, "v", ex=60)
        assert client.get(key) == b"v"
    finally:
        client.delete(key)
        client.close()
    names = [s.name for s in spans.get_finished_spans()]
    assert names == ["SET", "GET", "DEL"]
    attributes = spans.get_finished_spans()[0].attributes
    assert attributes is not None
    assert (attributes["db.system.name"], attributes["server.port"]) == ("redis", 6379)
    assert "v" not in attributes.values()


async def test_async_client(spans: InMemorySpanExporter) -> None:
    client = contract_for("redis://127.0.0.1:6379/0").async_client()
    key = f"msp-test:{uuid.uuid4().hex}"
    try:
        assert await client.incr(key) == 1
        assert await client.incr(key) == 2
    finally:
        await client.delete(key)
        await client.aclose()
    assert [s.name for s in spans.get_finished_spans()] == ["INCRBY", "INCRBY", "DEL"]  # redis-py sends INCRBY


def test_password_from_the_endpoint() -> None:
    with redis_server("--requirepass", "s3cret") as port:
        assert contract_for(f"redis://:s3cret@127.0.0.1:{port}").client().ping()
        with pytest.raises(redis.AuthenticationError):
            contract_for(f"redis://:wrong@127.0.0.1:{port}").client().ping()


def test_rediss_verifies_the_server_with_the_ca_in_ssl_cert_dir(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    # As MSP mounts it: an arbitrary file name, no OpenSSL hash links.
    custom = tmp_path / "custom-certs"
    custom.mkdir()
    (custom / "redis-ca-cert.pem").write_bytes(tls.ca_cert.read_bytes())
    tls_port = free_port()
    with redis_server(
        "--tls-port", str(tls_port), "--tls-cert-file", str(tls.server_cert), "--tls-key-file",
        str(tls.server_key), "--tls-ca-cert-file", str(tls.ca_cert), "--tls-auth-clients", "no",
        "--requirepass", "auth",
    ) as port:  # fmt: skip
        endpoint = f"rediss://:auth@127.0.0.1:{port}"
        contract = contract_for(endpoint, SSL_CERT_DIR=f"/nonexistent:{custom}")
        assert contract.client().ping()
        # Without the mounted CA the handshake fails: verification is really on.
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            contract_for(endpoint, SSL_CERT_DIR=str(tmp_path / "empty")).client().ping()


def test_not_configured_is_a_clear_error() -> None:
    with pytest.raises(RedisNotConfiguredError, match="REDIS_ENDPOINT"):
        testing.service_contract().redis.client()


def test_server_down_fails_fast_with_a_clear_error() -> None:
    client = contract_for(f"redis://127.0.0.1:{free_port()}").client()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="Connection refused"):
        client.ping()
    assert time.monotonic() - started < 5


def test_client_recovers_after_the_server_is_lost_and_back() -> None:
    with redis_server() as port:
        proxy = TCPProxy(port)
        client = contract_for(f"redis://127.0.0.1:{proxy.port}").client(socket_timeout=1.0)
        try:
            assert client.ping()
            proxy.cut()
            started = time.monotonic()
            with pytest.raises(redis.ConnectionError):
                client.ping()
            assert time.monotonic() - started < 5
            proxy.start()
            assert client.ping()  # a new connection, no restart needed
        finally:
            client.close()
            proxy.close()


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:6379", "127.0.0.1:6379"])
def test_bad_endpoint_is_a_config_error(endpoint: str) -> None:
    from msp_runtime import ConfigError

    with pytest.raises(ConfigError) as info:
        contract_for(endpoint)
    assert info.value.variables == ["REDIS_ENDPOINT"]
