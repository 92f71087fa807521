"""Sentry: error reports from logs, and cron check-ins for jobs.

Enabled by ``SENTRY_DSN``. As upstream, every log entry at error level or above that
carries an error (``exc_info`` or an ``error`` field) becomes a Sentry event, tagged with
its logger scope and the active trace; all events are sent (sample rate 1.0).
Environment is ``ENVIRONMENT_ID``, release the service version.

``sentry_sdk`` costs ~90 ms to import and initialise, so :func:`configure` only records
the settings: the SDK is loaded by :func:`load`, which the runtime calls once the server
listens, and which the first error to report (or a job's check-in) calls at once, so no
event is lost.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from structlog.typing import EventDict, WrappedLogger

from . import log as logs

if TYPE_CHECKING:
    from .diagnostics import DiagnosticsContract

__all__ = ["JobCheckIn", "configure", "enabled", "flush", "load"]

_enabled = False
_settings: tuple[DiagnosticsContract, dict[str, Any]] | None = None
"""What :func:`configure` recorded and :func:`load` has not applied yet."""
_lock = threading.RLock()
_loading = False  # sentry_sdk.init may log; an error it logs must not load again from within
_ERROR_LEVELS = frozenset({"error", "exception", "critical", "fatal"})


def enabled() -> bool:
    """Whether :func:`configure` turned Sentry on."""
    return _enabled


def configure(diagnostics: DiagnosticsContract, **options: Any) -> bool:
    """Turn Sentry on when ``SENTRY_DSN`` is set (the SDK is loaded later); return whether it is on.

    ``options`` are passed to ``sentry_sdk.init`` (tests use them to pick the transport
    compression).
    """
    global _enabled, _settings
    if not diagnostics.sentry_dsn:
        return False
    with _lock:
        _settings = (diagnostics, options)
    if not _enabled:
        logs.add_processor(_report_errors)
    _enabled = True
    return True


def load() -> None:
    """Import and initialise ``sentry_sdk`` with the configured settings, if not done yet."""
    global _settings, _loading
    with _lock:
        if _settings is None or _loading:
            return
        _loading = True
        try:
            diagnostics, options = _settings
            import sentry_sdk
            from sentry_sdk.integrations.logging import LoggingIntegration

            sentry_sdk.init(
                dsn=diagnostics.sentry_dsn,
                environment=diagnostics.environment_id,
                release=diagnostics.service_version,
                sample_rate=1.0,
                auto_enabling_integrations=False,
                disabled_integrations=[LoggingIntegration],  # the log bridge below reports instead
                **options,
            )
            sentry_sdk.set_tag("resource.service.name", diagnostics.service_name)
            sentry_sdk.set_tag("resource.service.version", diagnostics.service_version)
            _settings = None
        finally:
            _loading = False


def flush(timeout: float) -> None:
    """Send queued events, waiting at most ``timeout`` seconds (nothing to send if never loaded)."""
    if _enabled and _settings is None:
        import sentry_sdk

        sentry_sdk.flush(timeout=timeout)


def _report_errors(_: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: send error-level entries that carry an error to Sentry."""
    level = str(event_dict.get("level", method))
    if level not in _ERROR_LEVELS:
        return event_dict
    exc_info = event_dict.get("exc_info")
    error = event_dict.get("error")
    if not exc_info and error is None:
        return event_dict
    try:
        load()
    except Exception:  # e.g. a DSN Sentry refuses: reported as a configuration error, not here
        return event_dict
    import sentry_sdk

    scope_name = str(event_dict.get("scope", ""))
    message = str(event_dict.get("event", ""))
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("scope", scope_name)
        scope.set_context("log", {k: _plain(v) for k, v in event_dict.items() if k != "exc_info"})
        if "trace_id" in event_dict:
            scope.set_context("trace", {"trace_id": event_dict["trace_id"], "span_id": event_dict.get("span_id")})
        scope.fingerprint = ["{{ default }}", scope_name, message]
        exception = _exception(exc_info)
        if exception is not None:
            sentry_sdk.capture_exception(exception)
        else:
            sentry_sdk.capture_message(f"{scope_name}: {message}\n--\n{error}", level="error")
    return event_dict


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and isinstance(exc_info[1], BaseException):
        return exc_info[1]
    if exc_info is True:
        import sys

        return sys.exc_info()[1]
    return None


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


@dataclass
class JobCheckIn:
    """A Sentry cron check-in for one job execution (inert without a monitor)."""

    monitor_slug: str | None
    check_in_id: str
    monitor_config: dict[str, Any] | None

    @classmethod
    def begin(cls, diagnostics: DiagnosticsContract, execution_id: str) -> JobCheckIn:
        """Send ``in_progress`` when ``SENTRY_DSN``, the cron schedule and the deadline are all set."""
        check_in_id = execution_id.replace("-", "")
        deadline = diagnostics.cron_deadline
        if not (_enabled and diagnostics.cron_schedule and deadline is not None):
            return cls(None, check_in_id, None)
        minutes = deadline.total_seconds() / 60
        config: dict[str, Any] = {
            "schedule": {"type": "crontab", "value": diagnostics.cron_schedule},
            "max_runtime": math.ceil(minutes),
            "checkin_margin": math.ceil(minutes / 2),
            "timezone": "Etc/UTC",
        }
        checkin = cls(f"{diagnostics.service_name}-{diagnostics.environment_id}", check_in_id, config)
        checkin._send("in_progress", None)
        return checkin

    def finish(self, ok: bool, duration: float) -> None:
        """Send ``ok`` or ``error`` with the execution's duration in seconds."""
        if self.monitor_slug is not None:
            self._send("ok" if ok else "error", duration)

    def _send(self, status: str, duration: float | None) -> None:
        load()
        from sentry_sdk.crons import capture_checkin

        capture_checkin(
            monitor_slug=self.monitor_slug,
            check_in_id=self.check_in_id,
            status=status,
            duration=duration,
            monitor_config=self.monitor_config,  # type: ignore[arg-type]
        )
