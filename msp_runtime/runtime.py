"""Running a service or a job the way MSP's Go ``runtime.Start``/``runtime.ExecuteJob`` do.

Startup order, as upstream: logging, configuration and contract, ``--help``, Sentry,
validation (every problem reported at once, exit 1), OpenTelemetry, then the service's
``initialize`` or the job's ``execute``. Unlike upstream, a service also exits (code 1)
when a routine dies on its own, and a job flushes telemetry and Sentry before it exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn, TypeVar

from . import log as logs
from . import sentry
from .contract import Contract, JobContract, ServiceContract, ServiceMetadata
from .diagnostics import diagnostics_app
from .env import ConfigError, Env, load_config
from .jobs import JobExecution
from .log import Logger, get_logger
from .routines import Routine
from .server import HTTPServer
from .service import Job, Service, ServiceApp
from .telemetry import Telemetry, setup_telemetry

__all__ = ["execute_job", "run_job", "run_service", "start"]

ConfigT = TypeVar("ConfigT")
ContractT = TypeVar("ContractT", bound=Contract)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFERRED_LOAD_DELAY = 1.0
"""Seconds after the server listens (or a job starts) before the metrics SDK and Sentry are loaded."""
FLUSH_TIMEOUT = 2.0
"""Seconds telemetry and Sentry get to flush at exit."""


def start(service: Service[Any], argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``service`` until SIGTERM/SIGINT, then exit: 0 after a clean stop, 1 on failure."""
    sys.exit(run_service(service, argv))


def execute_job(job: Job[Any], argv: Sequence[str] | None = None) -> NoReturn:
    """Run one execution of ``job`` and exit: 0 on success, 1 on failure, 128+N on signal N."""
    sys.exit(run_job(job, argv))


# -- shared startup --------------------------------------------------------------------


@dataclass
class _Prepared:
    env: Env
    contract: Any
    config: Any
    telemetry: Telemetry
    deferred_load: threading.Timer | None = None


def _usage(name: str) -> str:
    return f"usage: {name} [-help]\n  -help\tShow service help text\n"


def _prepare(
    target: ServiceMetadata,
    config_type: type[Any],
    build: Callable[[Env, ServiceMetadata, Logger], Contract],
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None,
) -> _Prepared | int:
    """Everything before the service runs; an exit code when the process should stop."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_help = any(a in ("-help", "--help", "-h") for a in args)
    unknown = [a for a in args if a not in ("-help", "--help", "-h")]
    if unknown:
        sys.stderr.write(f"flag provided but not defined: {unknown[0]}\n{_usage(target.name)}")
        return EXIT_USAGE

    env = Env(environ)
    if env.get_optional("SANITY_CHECK", "exit after printing service metadata (container tests)") == "true":
        sys.stdout.write(json.dumps({"name": target.name, "version": target.version}) + "\n")
        sys.stderr.write("Sanity check passed, exiting without error")
        return EXIT_OK

    _configure_logging(env, target)
    start_log = get_logger("msp.start")
    config = load_config(env, config_type)
    contract = build(env, target, get_logger("msp.contract"))
    if show_help:
        sys.stdout.write(env.help_text(target.name, target.version))
        return EXIT_OK

    sentry_enabled = sentry.configure(contract.diagnostics)
    try:
        env.validate()
    except ConfigError as exc:
        start_log.error(
            "environment configuration error encountered",
            error=str(exc),
            variables=exc.variables,
        )
        sentry.flush(FLUSH_TIMEOUT)
        return EXIT_FAILURE

    try:
        telemetry = setup_telemetry(
            contract.diagnostics.opentelemetry,
            service_name=target.name,
            service_version=target.version,
            environment_id=contract.environment_id,
            logger=get_logger("msp.otel"),
        )
    except Exception as exc:
        start_log.exception("failed to initialize OpenTelemetry", error=str(exc))
        sentry.flush(FLUSH_TIMEOUT)
        return EXIT_FAILURE
    start_log.debug("runtime configured", sentry=sentry_enabled, otel=telemetry.enabled)
    return _Prepared(env, contract, config, telemetry)


def _configure_logging(env: Env, target: ServiceMetadata) -> None:
    msp = env.get_bool("MSP", False, "indicates if we are running in a MSP environment")
    level_name = env.get("SRC_LOG_LEVEL", "info", "log level: debug, info, warn, error or none")
    format_name = env.get("SRC_LOG_FORMAT", "json_gcp" if msp else "console", "log format: json_gcp, json or console")
    project = env.get_optional("GOOGLE_CLOUD_PROJECT", "GCP project ID")
    try:
        level = logs.parse_level(level_name)
    except ValueError as exc:
        env.add_error("SRC_LOG_LEVEL", str(exc))
        level = logs.parse_level("info")
    try:
        fmt = logs.parse_format(format_name)
    except ValueError as exc:
        env.add_error("SRC_LOG_FORMAT", str(exc))
        fmt = "json_gcp" if msp else "console"
    logs.configure(
        logs.LogSettings(
            level=level,
            format=fmt,
            service_name=target.name,
            service_version=target.version,
            gcp_project=project or None,
        )
    )


def _run(
    target: ServiceMetadata,
    config_type: type[Any],
    build: Callable[[Env, ServiceMetadata, Logger], Contract],
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None,
    main: Callable[[_Prepared], Coroutine[Any, Any, int]],
) -> int:
    """Prepare, run ``main`` on a fresh event loop, then flush whatever happened."""
    prepared = _prepare(target, config_type, build, argv, environ)
    if isinstance(prepared, int):
        return prepared
    try:
        return asyncio.run(main(prepared))
    finally:
        if prepared.deferred_load is not None:
            prepared.deferred_load.cancel()  # exiting within the delay: shutdown loads what it needs
        _finish(prepared.telemetry)


def _load_deferred(prepared: _Prepared, log: Logger) -> None:
    """Load what startup left for later, the metrics SDK and Sentry, in a thread a moment from now.

    Either is also loaded at once where it is first needed (an error to report, a
    ``/metrics`` scrape, shutdown), so nothing waits for this.
    """
    telemetry = prepared.telemetry

    def load() -> None:
        for what, step in (("OpenTelemetry metrics", telemetry.load_metrics), ("Sentry", sentry.load)):
            try:
                step()
            except Exception as exc:
                log.warning(f"failed to set up {what}", error=str(exc))
        log.debug("loaded the metrics SDK and Sentry after startup")

    timer = threading.Timer(DEFERRED_LOAD_DELAY, load)
    timer.daemon = True
    timer.name = "msp-deferred-load"
    timer.start()
    prepared.deferred_load = timer


def _finish(telemetry: Telemetry, timeout: float = FLUSH_TIMEOUT) -> None:
    """Flush telemetry and Sentry together within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    telemetry.shutdown(timeout)
    sentry.flush(max(0.1, deadline - time.monotonic()))


# -- services --------------------------------------------------------------------------


def run_service(
    service: Service[Any],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """:func:`start` without the ``sys.exit``: returns the exit code."""
    return _run(service, service.config_type, ServiceContract.from_env, argv, environ, partial(_serve, service))


async def _serve(service: Service[Any], prepared: _Prepared) -> int:
    log = get_logger("msp.start")
    contract: ServiceContract = prepared.contract
    signals = _SignalWatcher(log)
    signals.install()
    try:
        initialized = await _initialize(service, contract, prepared.config, signals)
    except asyncio.CancelledError:
        log.warning("interrupted during startup")
        return EXIT_OK
    except Exception as exc:
        log.exception("service startup failed", error=str(exc))
        return EXIT_FAILURE

    app = initialized.app or _not_found
    asgi = diagnostics_app(
        app,
        contract=contract.diagnostics,
        healthy=initialized.healthy,
        health_timeout=initialized.health_timeout,
        metrics=None if contract.msp else prepared.telemetry.metrics_endpoint,
    )
    if prepared.telemetry.request_metrics is not None:
        from .instrumentation import instrument_asgi

        parent_based = contract.diagnostics.opentelemetry.sampler.startswith("parentbased")
        asgi = instrument_asgi(asgi, prepared.telemetry.request_metrics, parent_based=parent_based)
    server = HTTPServer(asgi, host="0.0.0.0", port=contract.port, drain_timeout=initialized.drain_timeout)
    try:
        server.bind()
    except OSError as exc:
        log.error("failed to listen", port=contract.port, error=str(exc))
        await _stop_all(initialized, [], log)
        return EXIT_FAILURE
    _load_deferred(prepared, log)  # not needed to answer the request that woke the instance

    routines: list[Routine] = [server, *initialized.routines]
    tasks = {asyncio.create_task(r.start(), name=r.name): r for r in routines}
    log.info(
        "starting service",
        port=contract.port,
        msp=contract.msp,
        sentry=sentry.enabled(),
        routines=[r.name for r in routines],
    )
    stop_requested = asyncio.create_task(signals.wait())
    done, _ = await asyncio.wait([stop_requested, *tasks], return_when=asyncio.FIRST_COMPLETED)

    exit_code = EXIT_OK
    for task in done:
        if task is stop_requested:
            continue
        exit_code = EXIT_FAILURE
        name = tasks[task].name
        error = task.exception() if not task.cancelled() else None
        if error is not None:
            log.error("routine failed, stopping service", routine=name, error=str(error), exc_info=error)
        else:
            log.error("routine exited before shutdown was requested, stopping service", routine=name)
    if stop_requested.done():
        log.info("shutting down", signal=signals.received)
    else:
        stop_requested.cancel()

    # 1. Stop taking requests and let in-flight ones finish (the server bounds this).
    await server.stop()
    server_task = next(t for t, r in tasks.items() if r is server)
    try:
        await asyncio.wait_for(asyncio.shield(server_task), initialized.drain_timeout + 1.0)
    except TimeoutError:
        server.force_stop()
    except Exception:
        pass  # already reported above
    # 2. Then the service's routines, last started first, and its cleanups.
    others = [(t, r) for t, r in tasks.items() if r is not server]
    await _stop_all(initialized, others, log)  # failures are logged; like upstream, not fatal
    log.info("service stopped", exit_code=exit_code)
    return exit_code


async def _initialize(
    service: Service[Any], contract: ServiceContract, config: Any, signals: _SignalWatcher
) -> ServiceApp:
    """Run ``initialize``, abandoning it if a signal arrives first."""
    init = asyncio.create_task(service.initialize(get_logger("service"), contract, config))
    stop = asyncio.create_task(signals.wait())
    await asyncio.wait([init, stop], return_when=asyncio.FIRST_COMPLETED)
    if not init.done():
        init.cancel()
        raise asyncio.CancelledError
    stop.cancel()
    return init.result()


async def _stop_all(initialized: ServiceApp, tasks: Sequence[tuple[asyncio.Task[None], Routine]], log: Logger) -> None:
    """Stop routines in reverse order, then run cleanups in reverse order, within ``stop_timeout``."""
    deadline = time.monotonic() + initialized.stop_timeout

    async def bounded(what: str, name: str, step: Awaitable[Any]) -> None:
        try:
            await asyncio.wait_for(step, max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            log.error(f"{what} did not stop in time", name=name, timeout=initialized.stop_timeout)
        except Exception as exc:
            log.error(f"error stopping {what}", name=name, error=str(exc), exc_info=exc)

    for task, routine in reversed(tasks):
        await bounded("routine", routine.name, _stop_routine(task, routine))
    for cleanup in reversed(initialized.on_stop):
        await bounded("cleanup", getattr(cleanup, "__qualname__", repr(cleanup)), cleanup())


async def _stop_routine(task: asyncio.Task[None], routine: Routine) -> None:
    try:
        if not task.done():
            await routine.stop()
            await task
    except BaseException:
        task.cancel()
        raise


async def _not_found(scope: Any, receive: Any, send: Any) -> None:
    """The app of a service that serves only the diagnostics endpoints."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"404 page not found\n"})


class _SignalWatcher:
    """SIGTERM/SIGINT start a graceful shutdown; a second one exits at once (code 1)."""

    def __init__(self, log: Logger) -> None:
        self._event = asyncio.Event()
        self._log = log
        self.received: str | None = None
        self.signum = 0

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._handle, sig)

    def _handle(self, sig: signal.Signals) -> None:
        if self._event.is_set():
            self._log.error("second signal received, exiting immediately", signal=sig.name)
            sentry.flush(0.5)
            os._exit(EXIT_FAILURE)
        self.received = sig.name
        self.signum = int(sig)
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


# -- jobs ------------------------------------------------------------------------------


def run_job(
    job: Job[Any],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """:func:`execute_job` without the ``sys.exit``: returns the exit code."""
    return _run(job, job.config_type, JobContract.from_env, argv, environ, partial(_execute, job))


async def _execute(job: Job[Any], prepared: _Prepared) -> int:
    from opentelemetry import trace

    contract: JobContract = prepared.contract
    execution: JobExecution = contract.execution
    log = get_logger("msp.start")
    signals = _SignalWatcher(log)
    signals.install()
    _load_deferred(prepared, log)
    tracer = trace.get_tracer("msp_runtime.job")
    attributes: dict[str, str | int] = {
        "job.name": job.name,
        "job.execution.id": execution.id,
        "job.task.index": execution.task_index,
    }
    with tracer.start_as_current_span(f"job.execute {job.name}", attributes=attributes) as span:
        checkin = sentry.JobCheckIn.begin(contract.diagnostics, execution.id)
        log.info(
            "starting job execution",
            job=job.name,
            execution_id=execution.id,
            cloud_run_execution=execution.task_name,
            msp=contract.msp,
            sentry=sentry.enabled(),
        )
        started = time.monotonic()
        exit_code, error = await _run_job_task(job, contract, prepared.config, signals)
        duration = round(time.monotonic() - started, 3)
        checkin_log = get_logger("msp.contract.execution.checkin").bind(execution_id=execution.id)
        if error is None:
            checkin_log.info("job execution succeeded", duration=duration)
        else:
            span.record_exception(error)
            span.set_status(trace.StatusCode.ERROR, str(error))
            checkin_log.error("job execution failed", error=str(error), duration=duration, exc_info=error)
        checkin.finish(error is None, duration)
    return exit_code


JOB_CANCEL_TIMEOUT = 5.0
"""Seconds a job gets to unwind after SIGTERM cancels it (Cloud Run kills at 10 s)."""


async def _run_job_task(
    job: Job[Any], contract: JobContract, config: Any, signals: _SignalWatcher
) -> tuple[int, BaseException | None]:
    work = asyncio.create_task(job.execute(get_logger("job"), contract, config))
    stop = asyncio.create_task(signals.wait())
    await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
    if work.done():
        stop.cancel()
        error = None if work.cancelled() else work.exception()
        return (EXIT_OK if error is None else EXIT_FAILURE), error
    work.cancel()
    done, _ = await asyncio.wait([work], timeout=JOB_CANCEL_TIMEOUT)
    if not done:
        get_logger("msp.start").error("job ignored cancellation", timeout=JOB_CANCEL_TIMEOUT)
    return 128 + signals.signum, InterruptedError(f"job interrupted by {signals.received}")
