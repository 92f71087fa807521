"""``python -m msp_example job`` as a real process: exit codes, check-ins, flushing."""

from __future__ import annotations

import signal
import time
from typing import Any

from .support import Process, RecordingServer, otlp_spans, sentry_items, spawn


def job_env(
    sentry: RecordingServer | None = None, *, otlp: RecordingServer | None = None, **extra: str
) -> dict[str, str]:
    env = {"ENVIRONMENT_ID": "test", **extra}
    if sentry is not None:
        env["SENTRY_DSN"] = f"http://publickey@127.0.0.1:{sentry.port}/7"
    if otlp is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp.url
    return env


CRON = {"JOB_EXECUTION_CRON_SCHEDULE": "0 * * * *", "JOB_EXECUTION_DEADLINE": "600s"}


def run_job(env: dict[str, str]) -> Process:
    proc = spawn(env, args=("job",))
    proc.wait(30)
    return proc


def checkins(sentry: RecordingServer) -> list[dict[str, Any]]:
    return [payload for header, payload in sentry_items(sentry) if header["type"] == "check_in"]


def test_success_exits_0_and_flushes_the_job_span(recorder: RecordingServer) -> None:
    proc = run_job(job_env(otlp=recorder, CLOUD_RUN_EXECUTION="exec-1", CLOUD_RUN_TASK_INDEX="0"))
    assert proc.popen.returncode == 0, proc.err
    assert "job execution succeeded" in proc.err
    (span,) = [s for s in otlp_spans(recorder) if s["name"] == "job.execute msp-example-job"]
    assert span["status"] != 2  # not ERROR
    assert span["attributes"]["job.task.index"] == 0


def test_success_sends_in_progress_then_ok_check_ins(sentry: RecordingServer) -> None:
    proc = run_job(job_env(sentry) | CRON)
    assert proc.popen.returncode == 0, proc.err
    first, last = checkins(sentry)
    assert first["status"] == "in_progress"
    assert last["status"] == "ok"
    assert first["check_in_id"] == last["check_in_id"]
    assert len(first["check_in_id"]) == 32  # a UUID; Sentry drops check-ins whose id is not one
    assert first["monitor_slug"] == "msp-example-job-test"
    assert first["monitor_config"] == {
        "schedule": {"type": "crontab", "value": "0 * * * *"},
        "max_runtime": 10,
        "checkin_margin": 5,
        "timezone": "Etc/UTC",
    }
    assert last["duration"] >= 0
    assert first["environment"] == "test"


def test_failure_exits_1_reports_the_error_and_an_error_check_in(
    sentry: RecordingServer, recorder: RecordingServer
) -> None:
    proc = run_job(job_env(sentry, otlp=recorder, EXAMPLE_JOB_FAIL="true") | CRON)
    assert proc.popen.returncode == 1
    assert "job execution failed" in proc.err
    assert [c["status"] for c in checkins(sentry)] == ["in_progress", "error"]
    events = [p for h, p in sentry_items(sentry) if h["type"] == "event"]
    (event,) = events
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    (span,) = [s for s in otlp_spans(recorder) if s["name"] == "job.execute msp-example-job"]
    assert span["status"] == 2  # ERROR
    assert event["contexts"]["trace"]["trace_id"] == span["trace_id"]


def test_without_a_schedule_no_check_ins_are_sent(sentry: RecordingServer) -> None:
    proc = run_job(job_env(sentry, EXAMPLE_JOB_FAIL="true"))
    assert proc.popen.returncode == 1
    assert checkins(sentry) == []
    assert [h["type"] for h, _ in sentry_items(sentry)] == ["event"]


def test_config_errors_exit_1_naming_each_variable() -> None:
    proc = run_job(job_env(JOB_EXECUTION_DEADLINE="soon", CLOUD_RUN_TASK_INDEX="first", EXAMPLE_JOB_FAIL="nope"))
    assert proc.popen.returncode == 1
    for variable in ("JOB_EXECUTION_DEADLINE", "CLOUD_RUN_TASK_INDEX", "EXAMPLE_JOB_FAIL"):
        assert variable in proc.err
    assert "starting job execution" not in proc.err


def test_sigterm_stops_the_job_with_143_and_loses_nothing(sentry: RecordingServer, recorder: RecordingServer) -> None:
    proc = spawn(job_env(sentry, otlp=recorder, EXAMPLE_JOB_DURATION="60s") | CRON, args=("job",))
    deadline = time.monotonic() + 20
    while "job started" not in proc.err and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.signal(signal.SIGTERM)
    assert proc.wait(15) == 128 + signal.SIGTERM
    assert "job interrupted by SIGTERM" in proc.err
    assert [c["status"] for c in checkins(sentry)] == ["in_progress", "error"]
    assert [s["name"] for s in otlp_spans(recorder)] == ["job.execute msp-example-job"]


def test_job_help_lists_job_variables_and_no_port() -> None:
    proc = spawn({}, args=("job", "-help"))
    assert proc.wait() == 0
    assert proc.out.startswith("SERVICE: msp-example-job\n")
    assert "'CLOUD_RUN_TASK_INDEX'" in proc.out
    assert "'JOB_EXECUTION_DEADLINE'" in proc.out
    assert "'PORT'" not in proc.out
