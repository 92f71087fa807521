"""``python -m msp_example`` and a custom service as real processes: ports, signals, exit codes."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from .support import Recorded, RecordingServer, free_port, running, spawn

CUSTOM = Path(__file__).parent / "services" / "custom_service.py"
SECRET = "f00dfeedf00dfeed"


def test_serves_example_routes_and_diagnostics() -> None:
    with running({"VARIABLE": "hello"}) as proc:
        assert httpx.get(proc.url + "/").text == "Variable: hello"
        assert httpx.get(proc.url + "/any/path").text == "Variable: hello"
        assert httpx.get(proc.url + "/-/version").text == "0.0.0+dev"
        health = httpx.get(proc.url + "/-/healthz")
        assert (health.status_code, health.text) == (200, "healthz: ok")
        metrics = httpx.get(proc.url + "/metrics")
        assert metrics.status_code == 200
        assert "request_count_total 2" in metrics.text
        assert 'http_server_request_duration_count{http_request_method="GET",http_response_status_code="200"}' in (
            metrics.text
        )
    assert "backends not configured" in proc.err
    assert "postgresql" in proc.err
    assert "redis" in proc.err
    assert "bigquery" in proc.err


def test_binds_all_interfaces_not_loopback_only() -> None:
    with running() as proc:
        # 127.0.0.2 is only reachable when the server listens on 0.0.0.0, not on 127.0.0.1.
        response = httpx.get(f"http://127.0.0.2:{proc.port}/-/version")
        assert response.text == "0.0.0+dev"


def test_deployed_mode_logs_json_for_cloud_logging_and_hides_metrics() -> None:
    env = {"MSP": "true", "DIAGNOSTICS_SECRET": SECRET, "ENVIRONMENT_ID": "prod"}
    with running(env) as proc:
        assert httpx.get(proc.url + "/metrics").text == "Variable: 13"  # not the metrics endpoint
        assert httpx.get(proc.url + "/-/healthz").status_code == 401
        ok = httpx.get(proc.url + "/-/healthz", headers={"authorization": f"Bearer {SECRET}"})
        assert ok.status_code == 200
    entries = proc.json_lines()
    starting = next(e for e in entries if e.get("message") == "starting service" and e.get("scope") == "msp.start")
    assert starting["severity"] == "INFO"
    assert starting["msp"] is True
    assert all("severity" in e and "message" in e for e in entries)


def test_bad_environment_exits_1_naming_every_variable_without_secrets() -> None:
    port = free_port()
    proc = spawn(
        {
            "PORT": "eighty",
            "MSP": "maybe",
            "STATELESS_MODE": "perhaps",
            "DIAGNOSTICS_SECRET": "",
            "REDIS_ENDPOINT": "http://:hunter2@redis:6379",
            "SRC_LOG_LEVEL": "loud",
        },
        port=None,
    )
    assert proc.wait() == 1
    for variable in ("PORT", "MSP", "STATELESS_MODE", "DIAGNOSTICS_SECRET", "REDIS_ENDPOINT", "SRC_LOG_LEVEL"):
        assert variable in proc.err, variable
    assert "environment configuration error" in proc.err
    assert "hunter2" not in proc.err + proc.out
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/-/version")


def test_missing_port_is_reported() -> None:
    proc = spawn({}, port=None)
    assert proc.wait() == 1
    assert "PORT: required but not set" in proc.err


def test_help_lists_service_and_runtime_variables() -> None:
    proc = spawn({}, args=("-help",))
    assert proc.wait() == 0
    assert proc.out.startswith("SERVICE: msp-example\nVERSION: 0.0.0+dev\nCONFIGURATION OPTIONS:\n")
    for line in (
        "- 'STATELESS_MODE': if true, disable dependencies (default: 'false')",
        "- 'VARIABLE': variable value (default: '13')",
        "- 'PORT': service port (required)",
        "- 'DIAGNOSTICS_SECRET': secret used to authenticate diagnostics requests (optional)",
    ):
        assert line in proc.out.splitlines()


def test_unknown_flag_exits_2() -> None:
    proc = spawn({}, args=("--verbose",), port=free_port())
    assert proc.wait() == 2
    assert "flag provided but not defined: --verbose" in proc.err


def test_sanity_check() -> None:
    proc = spawn({"SANITY_CHECK": "true"})
    assert proc.wait() == 0
    assert json.loads(proc.out) == {"name": "msp-example", "version": "0.0.0+dev"}
    assert proc.err == "Sanity check passed, exiting without error"


def slow_upstream(seconds: float) -> RecordingServer:
    def handler(request: Recorded) -> tuple[int, dict[str, str], bytes]:
        time.sleep(seconds)
        return 200, {"content-type": "text/plain"}, b"slow done"

    return RecordingServer(handler)


def test_sigterm_drains_in_flight_request_then_exits_0() -> None:
    upstream = slow_upstream(1.5)
    try:
        with running({"DIAGNOSTICS_SECRET": SECRET}) as proc:
            result: dict[str, httpx.Response] = {}

            def call() -> None:
                result["r"] = httpx.get(
                    proc.url + "/proxy",
                    params={"host": upstream.url, "path": "slow"},
                    headers={"authorization": f"Bearer {SECRET}"},
                    timeout=10,
                )

            caller = threading.Thread(target=call)
            caller.start()
            upstream.wait_for(lambda r: r.path == "/slow")
            proc.signal(signal.SIGTERM)
            time.sleep(0.4)
            with pytest.raises(httpx.ConnectError):  # no new connections while draining
                httpx.get(proc.url + "/-/version", timeout=1)
            caller.join(10)
            assert proc.wait() == 0
            assert (result["r"].status_code, result["r"].text) == (200, "slow done")
        assert proc.err.index("shutting down") < proc.err.index("service stopped")
    finally:
        upstream.close()


def test_sigint_also_stops_gracefully() -> None:
    with running() as proc:
        proc.signal(signal.SIGINT)
        assert proc.wait() == 0
    assert "signal=SIGINT" in proc.err


def test_custom_service_stops_routines_and_runs_cleanups() -> None:
    with running(script=CUSTOM) as proc:
        assert httpx.get(proc.url + "/").text == "custom"
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    assert proc.out.index("worker stopped") < proc.out.index("cleanup ran")


@pytest.mark.parametrize("mode", ["routine-returns", "routine-raises"])
def test_routine_ending_on_its_own_stops_the_service_with_exit_1(mode: str) -> None:
    proc = spawn({"CUSTOM_MODE": mode}, script=CUSTOM, port=free_port())
    assert proc.wait(timeout=15) == 1  # upstream would hang here until a signal
    assert "worker" in proc.err
    assert "cleanup ran" in proc.out
    if mode == "routine-raises":
        assert "worker lost its connection" in proc.err


def test_stop_timeout_bounds_a_hung_routine() -> None:
    with running({"CUSTOM_MODE": "slow-stop"}, script=CUSTOM) as proc:
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        assert time.monotonic() - started < 8
    assert "routine did not stop in time" in proc.err
    assert "cleanup ran" in proc.out


def test_initialize_failure_exits_1() -> None:
    proc = spawn({"CUSTOM_MODE": "fail-init"}, script=CUSTOM, port=free_port())
    assert proc.wait() == 1
    assert "service startup failed" in proc.err
    assert "database unreachable" in proc.err


def test_port_in_use_exits_1_with_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn({}, port=port)
        assert proc.wait() == 1
    assert "failed to listen" in proc.err
    assert "Address already in use" in proc.err


def test_second_signal_exits_immediately() -> None:
    with running({"CUSTOM_MODE": "slow-stop"}, script=CUSTOM) as proc:
        proc.signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 1
    assert "second signal received" in proc.err


def test_listening_socket_is_tcp_so_responses_are_not_delayed() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto is TCP; without it every
    response waited out a 40 ms delayed ACK (found by the request benchmark)."""
    from msp_runtime.server import HTTPServer

    async def app(scope: object, receive: object, send: object) -> None:
        return None

    server = HTTPServer(app, host="127.0.0.1", port=free_port(), drain_timeout=1)
    server.bind()
    assert server._socket is not None
    assert server._socket.proto == socket.IPPROTO_TCP
    server._socket.close()
