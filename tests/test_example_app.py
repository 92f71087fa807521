"""The example's HTTP API in process: upstream's ``/`` and ``/proxy`` behaviour."""

from __future__ import annotations

import httpx
from msp_example.backends import Backends
from msp_example.httpapi import build_app

from msp_runtime import testing

from .support import RecordingServer

SECRET = "0123456789abcdef"


def client() -> httpx.AsyncClient:
    contract = testing.service_contract({"DIAGNOSTICS_SECRET": SECRET})
    app = build_app(contract, "13", Backends.disabled())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


async def test_root_answers_every_path_with_the_variable() -> None:
    async with client() as c:
        for path in ("/", "/anything/else"):
            response = await c.get(path)
            assert (response.status_code, response.text) == (200, "Variable: 13")


async def test_proxy_requires_the_diagnostics_token() -> None:
    async with client() as c:
        assert (await c.get("/proxy")).status_code == 401
        assert (await c.get("/proxy", headers={"authorization": "Token x"})).status_code == 400


async def test_proxy_validates_its_query() -> None:
    auth = {"authorization": f"Bearer {SECRET}"}
    async with client() as c:
        missing_host = await c.get("/proxy", params={"path": "x"}, headers=auth)
        assert (missing_host.status_code, missing_host.text) == (400, "query parameter 'host' is required")
        missing_path = await c.get("/proxy", params={"host": "http://127.0.0.1:1"}, headers=auth)
        assert (missing_path.status_code, missing_path.text) == (400, "query parameter 'path' is required")
        bad_host = await c.get("/proxy", params={"host": "ftp://x", "path": "y"}, headers=auth)
        assert bad_host.status_code == 400


async def test_proxy_forwards_method_body_and_x_proxy_headers(recorder: RecordingServer) -> None:
    recorder.handler = lambda r: (201, {"content-type": "text/plain", "x-upstream": "1"}, b"created")
    async with client() as c:
        response = await c.post(
            "/proxy",
            params={"host": recorder.url, "path": "items/7"},
            headers={"authorization": f"Bearer {SECRET}", "x-proxy-x-request-id": "abc", "x-other": "no"},
            content=b"payload",
        )
    assert (response.status_code, response.text, response.headers["x-upstream"]) == (201, "created", "1")
    (forwarded,) = recorder.requests
    assert (forwarded.method, forwarded.path, forwarded.body) == ("POST", "/items/7", b"payload")
    assert forwarded.headers["x-request-id"] == "abc"
    assert "x-other" not in forwarded.headers
    assert "authorization" not in forwarded.headers


async def test_proxy_reports_an_unreachable_host_as_502() -> None:
    from .support import free_port

    async with client() as c:
        response = await c.get(
            "/proxy",
            params={"host": f"http://127.0.0.1:{free_port()}", "path": "x"},
            headers={"authorization": f"Bearer {SECRET}"},
        )
    assert response.status_code == 502
