"""The example's HTTP API: ``/`` and the network-test ``/proxy``, as upstream's ``httpapi``."""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from msp_runtime import ServiceContract, check_authorization


def build_app(contract: ServiceContract, variable: str, extra_routes: list[Any]) -> Starlette:
    request_count = metrics.get_meter("msp-example").create_counter("request_count", description="requests to /")

    async def root(request: Request) -> Response:
        request_count.add(1)
        return PlainTextResponse(f"Variable: {variable}")

    async def guarded_proxy(request: Request) -> Response:
        denied = check_authorization(contract.diagnostics.secret, request.headers.get("authorization"))
        if denied is not None:
            return PlainTextResponse(denied[1], status_code=denied[0])
        return await proxy(request)

    return Starlette(
        routes=[
            *extra_routes,
            Route("/proxy", guarded_proxy, methods=_ALL),
            Route("/{path:path}", root, methods=_ALL),
        ]
    )


_ALL = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_PROXY_PREFIX = "x-proxy-"


async def proxy(request: Request) -> Response:
    """Forward the request to ``host`` + ``/path``, copying ``X-Proxy-*`` headers without the prefix."""
    import httpx  # only this endpoint needs an HTTP client

    host = request.query_params.get("host")
    if not host:
        return PlainTextResponse("query parameter 'host' is required", status_code=400)
    path = request.query_params.get("path")
    if not path:
        return PlainTextResponse("query parameter 'path' is required", status_code=400)
    target = httpx.URL(host)
    if target.scheme not in ("http", "https") or not target.host:
        return PlainTextResponse(f"invalid host {host!r}", status_code=400)
    insecure = request.query_params.get("insecure", "false").lower() in ("1", "t", "true")
    headers = {k[len(_PROXY_PREFIX) :]: v for k, v in request.headers.items() if k.startswith(_PROXY_PREFIX)}
    async with httpx.AsyncClient(verify=not insecure, timeout=30) as client:
        try:
            upstream = await client.request(
                request.method, target.join("/" + path.lstrip("/")), headers=headers, content=await request.body()
            )
        except httpx.HTTPError as exc:
            return PlainTextResponse(f"proxy error: {exc}", status_code=502)
    passthrough = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
    return Response(upstream.content, status_code=upstream.status_code, headers=passthrough)


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length", "upgrade"}
