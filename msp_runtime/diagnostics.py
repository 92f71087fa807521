"""The diagnostics surface MSP's infrastructure relies on.

- ``/-/version``: no auth, body = the service version.
- ``/-/healthz``: ``Authorization: Bearer $DIAGNOSTICS_SECRET`` (constant-time compare);
  400 for a malformed header, 401 for a missing or wrong token, 200 ``healthz: ok``,
  500 ``healthz: <error>``. The service's health check gets the query parameters and
  runs under a timeout, so a hung backend yields a 500 instead of a hung probe.
- ``/metrics``: Prometheus text, only in local development (``MSP`` false).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .env import Env
from .log import Logger, get_logger
from .telemetry import TelemetryConfig

if TYPE_CHECKING:
    from .contract import ServiceMetadata

__all__ = [
    "ASGIApp",
    "DiagnosticsContract",
    "HealthCheck",
    "HealthCheckError",
    "check_all",
    "check_authorization",
    "diagnostics_app",
    "require_diagnostics_auth",
]

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
HealthCheck = Callable[[dict[str, list[str]]], Awaitable[None]]
"""``async def healthy(query) -> None``: return when healthy, raise to report the problem."""

_TEXT = b"text/plain; charset=utf-8"
_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, kw_only=True)
class DiagnosticsContract:
    """Diagnostics settings: the secret, telemetry, Sentry and job check-in configuration."""

    secret: str | None = field(repr=False)
    """``DIAGNOSTICS_SECRET``: bearer token for ``/-/healthz``; ``None`` disables auth."""
    opentelemetry: TelemetryConfig
    sentry_dsn: str | None = field(repr=False)
    """``SENTRY_DSN``: enables error reports and cron check-ins."""
    cron_schedule: str | None
    """``JOB_EXECUTION_CRON_SCHEDULE``: the job's crontab, for Sentry cron monitors."""
    cron_deadline: timedelta | None
    """``JOB_EXECUTION_DEADLINE``: the job's deadline, e.g. ``600s``."""
    service_name: str
    service_version: str
    environment_id: str

    @classmethod
    def from_env(
        cls,
        env: Env,
        *,
        service: ServiceMetadata,
        msp: bool,
        gcp_project: str | None,
        environment_id: str,
        logger: Logger | None,
    ) -> DiagnosticsContract:
        """Read the diagnostics variables; ``logger`` (services only) hears about a missing secret."""
        secret = env.get_optional("DIAGNOSTICS_SECRET", "secret used to authenticate diagnostics requests", secret=True)
        if secret == "":
            env.add_error("DIAGNOSTICS_SECRET", "set to an empty value; unset it to disable diagnostics auth")
        elif secret is None and logger is not None:
            log = logger.bind(scope="msp.contract.diagnostics")
            message = "DIAGNOSTICS_SECRET not set, diagnostics handlers will not have any authorization checks"
            (log.error if msp else log.warning)(message)
        telemetry = TelemetryConfig.from_env(env, gcp_project=gcp_project, msp=msp)
        sentry_dsn = env.get_optional("SENTRY_DSN", "Sentry error reporting DSN", secret=True)
        if sentry_dsn and (problem := _dsn_problem(sentry_dsn)):
            env.add_error("SENTRY_DSN", problem)
        cron_schedule = env.get_optional("JOB_EXECUTION_CRON_SCHEDULE", "Cron schedule for the job execution")
        cron_deadline = env.get_optional_duration("JOB_EXECUTION_DEADLINE", "Deadline for the job execution")
        return cls(
            secret=secret or None,
            opentelemetry=telemetry,
            sentry_dsn=sentry_dsn or None,
            cron_schedule=cron_schedule or None,
            cron_deadline=cron_deadline,
            service_name=service.name,
            service_version=service.version,
            environment_id=environment_id,
        )


def _dsn_problem(dsn: str) -> str | None:
    """Why Sentry would refuse ``dsn`` (checked here so it is reported with the other variables)."""
    form = "expected http(s)://<public key>@<host>/<project id>"
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"not a valid URL; {form}"
    if parts.scheme not in ("http", "https"):
        return f"unsupported scheme; {form}"
    if not parts.hostname or not parts.username:
        return f"missing host or public key; {form}"
    if not parts.path.rsplit("/", 1)[-1].isdigit():
        return f"the project id is not a number; {form}"
    return None


def check_authorization(secret: str | None, authorization: str | None) -> tuple[int, str] | None:
    """Check an ``Authorization`` header against the diagnostics secret.

    Returns ``None`` when the request may pass, else the ``(status, body)`` to answer.
    """
    if secret is None:
        return None
    if authorization:
        scheme, sep, token = authorization.partition(" ")
        if not sep:
            return 400, "token type missing in Authorization header"
        if scheme.lower() != "bearer":
            return 400, f"invalid token scheme {scheme}"
    else:
        token = ""
    if hmac.compare_digest(token.encode(), secret.encode()):
        return None
    return 401, "unauthorized"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _respond(send: Send, status: int, body: str | bytes, content_type: bytes = _TEXT) -> None:
    data = body.encode() if isinstance(body, str) else body
    headers = [(b"content-type", content_type), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def require_diagnostics_auth(app: ASGIApp, secret: str | None) -> ASGIApp:
    """Guard ``app`` with the diagnostics bearer token, as upstream's ``DiagnosticsAuthMiddleware``."""

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            denied = check_authorization(secret, _header(scope, b"authorization"))
            if denied is not None:
                await _respond(send, *denied)
                return
        await app(scope, receive, send)

    return guarded


def diagnostics_app(
    app: ASGIApp,
    *,
    contract: DiagnosticsContract,
    healthy: HealthCheck | None = None,
    health_timeout: float = 5.0,
    metrics: Callable[[], bytes] | None = None,
    logger: Logger | None = None,
) -> ASGIApp:
    """Serve the diagnostics endpoints in front of ``app``; every other request goes to ``app``."""
    log = logger or get_logger("msp.contract.diagnostics.healthz")
    version = contract.service_version

    async def healthz(scope: Scope, send: Send) -> None:
        denied = check_authorization(contract.secret, _header(scope, b"authorization"))
        if denied is not None:
            await _respond(send, *denied)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        error = await run_health_check(healthy, query, health_timeout)
        if error is None:
            await _respond(send, 200, "healthz: ok")
            return
        log.warning("service reported not healthy", query=scope.get("query_string", b"").decode(), error=error)
        await _respond(send, 500, f"healthz: {error}")

    async def serve_metrics(send: Send) -> None:
        assert metrics is not None
        await _respond(send, 200, await asyncio.to_thread(metrics), _PROMETHEUS)

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/-/healthz":
                return await healthz(scope, send)
            if path == "/-/version":
                return await _respond(send, 200, version)
            if path == "/metrics" and metrics is not None:
                return await serve_metrics(send)
        await app(scope, receive, send)

    return dispatch


async def run_health_check(healthy: HealthCheck | None, query: dict[str, list[str]], timeout: float) -> str | None:
    """Run ``healthy`` under ``timeout`` seconds; return ``None`` if healthy, else the problem."""
    if healthy is None:
        return None
    return await _problem(healthy(query), timeout, "health check timed out")


async def _problem(check: Awaitable[object], timeout: float, timed_out: str = "timed out") -> str | None:
    """What is wrong with ``check`` (failed or slower than ``timeout``), or ``None``."""
    try:
        await asyncio.wait_for(check, timeout)
    except TimeoutError:
        return f"{timed_out} after {timeout:g}s"
    except Exception as exc:  # any failure is an unhealthy report, not a crash
        return str(exc) or type(exc).__name__
    return None


class HealthCheckError(Exception):
    """Which backends failed a health check, and why: ``"postgresql: refused; redis: timed out"``."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in self.failures.items()))


async def check_all(checks: Mapping[str, Callable[[], Awaitable[object]]], timeout: float = 2.0) -> None:
    """Run named checks concurrently, each under ``timeout`` seconds.

    One slow backend costs at most ``timeout``, not the sum of all checks. Raises
    :class:`HealthCheckError` naming every check that failed or timed out.
    """

    results = await asyncio.gather(*(_problem(check(), timeout) for check in checks.values()))
    failures = {name: problem for name, problem in zip(checks, results, strict=True) if problem is not None}
    if failures:
        raise HealthCheckError(failures)
