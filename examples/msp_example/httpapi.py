"""The example's HTTP API: ``/`` and ``/proxy`` as upstream's ``httpapi``, plus ``/events`` for the backends."""

from __future__ import annotations

from opentelemetry import metrics
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from msp_runtime import ServiceContract, check_authorization

from .backends import Backends


def build_app(contract: ServiceContract, variable: str, backends: Backends) -> Starlette:
    request_count = metrics.get_meter("msp-example").create_counter("request_count", description="requests to /")

    async def root(request: Request) -> Response:
        request_count.add(1)
        return PlainTextResponse(f"Variable: {variable}")

    async def guarded_proxy(request: Request) -> Response:
        denied = check_authorization(contract.diagnostics.secret, request.headers.get("authorization"))
        if denied is not None:
            return PlainTextResponse(denied[1], status_code=denied[0])
        return await proxy(request)

    async def record_event(request: Request) -> Response:
        name = request.query_params.get("name")
        if not name:
            return PlainTextResponse("query parameter 'name' is required", status_code=400)
        return JSONResponse(await backends.record(name))

    async def list_events(request: Request) -> Response:
        return JSONResponse(await backends.recent())

    return Starlette(
        routes=[
            Route("/events", record_event, methods=["POST"]),
            Route("/events", list_events, methods=["GET"]),
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
