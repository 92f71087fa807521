from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from msp_runtime import testing
from msp_runtime.diagnostics import ASGIApp, check_authorization, diagnostics_app, require_diagnostics_auth

SECRET = "0123456789abcdef"


async def downstream(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"app:" + scope["path"].encode()})


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


def build(secret: str | None = SECRET, **kwargs: Any) -> ASGIApp:
    env = {"DIAGNOSTICS_SECRET": secret} if secret is not None else {}
    contract = testing.service_contract(env, metadata=testing.Metadata("svc", "1.2.3"))
    return diagnostics_app(downstream, contract=contract.diagnostics, **kwargs)


@pytest.mark.parametrize(
    ("authorization", "status", "body"),
    [
        (None, 401, "unauthorized"),
        ("", 401, "unauthorized"),
        ("Bearer", 400, "token type missing in Authorization header"),
        ("Basic dXNlcjpwYXNz", 400, "invalid token scheme Basic"),
        ("Bearer wrong", 401, "unauthorized"),
        (f"Bearer {SECRET}x", 401, "unauthorized"),
        (f"Bearer {SECRET[:-1]}", 401, "unauthorized"),
        (f"Bearer  {SECRET}", 401, "unauthorized"),
        (f"Bearer {SECRET}", 200, "healthz: ok"),
        (f"bearer {SECRET}", 200, "healthz: ok"),
        (f"BEARER {SECRET}", 200, "healthz: ok"),
    ],
)
async def test_healthz_auth(authorization: str | None, status: int, body: str) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    async with client(build()) as c:
        response = await c.get("/-/healthz", headers=headers)
    assert (response.status_code, response.text) == (status, body)
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


async def test_no_secret_means_no_auth() -> None:
    async with client(build(secret=None)) as c:
        response = await c.get("/-/healthz", headers={"authorization": "Basic nonsense"})
    assert (response.status_code, response.text) == (200, "healthz: ok")


async def test_version_needs_no_auth_and_is_exact() -> None:
    async with client(build()) as c:
        for method in ("GET", "POST", "HEAD"):
            response = await c.request(method, "/-/version")
            assert response.status_code == 200
            if method != "HEAD":
                assert response.content == b"1.2.3"


async def test_unhealthy_is_500_with_error_and_receives_query() -> None:
    seen: list[dict[str, list[str]]] = []

    async def healthy(query: dict[str, list[str]]) -> None:
        seen.append(query)
        raise RuntimeError("redis: connection refused")

    async with client(build(healthy=healthy)) as c:
        response = await c.get("/-/healthz?deep=true&check=a&check=b", headers={"authorization": f"Bearer {SECRET}"})
    assert (response.status_code, response.text) == (500, "healthz: redis: connection refused")
    assert seen == [{"deep": ["true"], "check": ["a", "b"]}]


async def test_health_check_not_called_before_auth() -> None:
    calls = 0

    async def healthy(query: dict[str, list[str]]) -> None:
        nonlocal calls
        calls += 1

    async with client(build(healthy=healthy)) as c:
        assert (await c.get("/-/healthz")).status_code == 401
    assert calls == 0


async def test_hung_health_check_times_out_as_500() -> None:
    async def healthy(query: dict[str, list[str]]) -> None:
        await asyncio.sleep(30)

    async with client(build(healthy=healthy, health_timeout=0.2)) as c:
        response = await c.get("/-/healthz", headers={"authorization": f"Bearer {SECRET}"})
    assert (response.status_code, response.text) == (500, "healthz: health check timed out after 0.2s")


async def test_other_paths_reach_the_app_and_exact_matching() -> None:
    async with client(build()) as c:
        assert (await c.get("/")).text == "app:/"
        assert (await c.get("/-/healthz/")).text == "app:/-/healthz/"
        assert (await c.get("/metrics")).text == "app:/metrics"


async def test_metrics_served_when_given() -> None:
    async with client(build(metrics=lambda: b"# TYPE x counter\nx_total 1\n")) as c:
        response = await c.get("/metrics")
    assert response.status_code == 200
    assert response.text == "# TYPE x counter\nx_total 1\n"


async def test_require_diagnostics_auth_guards_other_handlers() -> None:
    app = require_diagnostics_auth(downstream, SECRET)
    async with client(app) as c:
        assert (await c.get("/proxy")).status_code == 401
        ok = await c.get("/proxy", headers={"authorization": f"Bearer {SECRET}"})
        assert (ok.status_code, ok.text) == (200, "app:/proxy")


def test_check_authorization_uses_constant_time_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert check_authorization("s3cret", "Bearer nope") == (401, "unauthorized")
    assert check_authorization("s3cret", "Bearer s3cret") is None
    assert calls == [(b"nope", b"s3cret"), (b"s3cret", b"s3cret")]


async def test_check_all_runs_checks_concurrently_and_names_failures() -> None:
    from msp_runtime import HealthCheckError, check_all

    all_running = asyncio.Barrier(3)  # only passes if the three checks run at the same time

    async def ok() -> None:
        await all_running.wait()

    async def broken() -> None:
        await all_running.wait()
        raise ConnectionRefusedError("connection refused")

    async def hung() -> None:
        await all_running.wait()
        await asyncio.sleep(30)

    with pytest.raises(HealthCheckError) as info:
        await check_all({"postgresql": ok, "redis": broken, "bigquery": hung}, timeout=1.0)
    assert info.value.failures == {"redis": "connection refused", "bigquery": "timed out after 1s"}
    assert str(info.value) == "redis: connection refused; bigquery: timed out after 1s"


async def test_check_all_passes_when_all_pass() -> None:
    from msp_runtime import check_all

    async def ok() -> None:
        return None

    await check_all({"a": ok, "b": ok})
