"""Cold start: heavy backends are imported only when the contract configures them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from .support import BASE_ENV, ROOT

HEAVY = [
    "psycopg",
    "psycopg_pool",
    "redis",
    "google.cloud.bigquery",
    "google.cloud.sql.connector",
    "sentry_sdk",
    "pydantic",
]


def loaded_after(code: str) -> list[str]:
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=BASE_ENV, cwd=ROOT, check=True
    )
    return list(json.loads(out.stdout.splitlines()[-1]))


def test_import_msp_runtime_imports_no_backend() -> None:
    assert loaded_after("import msp_runtime") == []


def test_example_without_backends_imports_none() -> None:
    code = """
        import asyncio
        from msp_runtime import testing, get_logger
        from msp_example import ExampleService
        from msp_example.config import Config
        contract = testing.service_contract()
        service = ExampleService()
        asyncio.run(service.initialize(get_logger("t"), contract, testing.load_test_config(Config)))
    """
    assert loaded_after(code) == []


def test_configured_backends_are_imported_on_use() -> None:
    code = """
        from msp_runtime import testing
        contract = testing.service_contract({"REDIS_ENDPOINT": "redis://127.0.0.1:6379"})
        contract.redis.client()
    """
    assert loaded_after(code) == ["redis"]


def test_sentry_is_loaded_by_the_first_error_to_report_not_by_configure() -> None:
    code = """
        from msp_runtime import get_logger, log, sentry, testing
        log.configure(log.LogSettings())
        contract = testing.service_contract({"SENTRY_DSN": "http://key@127.0.0.1:9/1"})
        assert sentry.configure(contract.diagnostics)
        import sys
        assert "sentry_sdk" not in sys.modules
        get_logger("t").info("no error here", error="ignored at info level")
        assert "sentry_sdk" not in sys.modules
        get_logger("t").error("failed", error="boom")
    """
    assert loaded_after(code) == ["sentry_sdk"]
