"""Helpers shared by the tests: free ports, service subprocesses and recording HTTP servers."""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BASE_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": os.environ.get("HOME", "/root"),
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    """A service or job started as ``python -m ...``, its output collected as it runs."""

    popen: subprocess.Popen[bytes]
    port: int | None
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        for pipe, sink in ((self.popen.stdout, self.stdout), (self.popen.stderr, self.stderr)):
            threading.Thread(target=_pump, args=(pipe, sink), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until ``/-/version`` answers (or the process dies)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited with {self.popen.returncode}:\n{self.err}")
            try:
                if httpx.get(self.url + "/-/version", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError(f"not ready after {timeout}s:\n{self.err}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        code = self.popen.wait(timeout)
        time.sleep(0.05)  # let the pump threads drain the pipes
        return code

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.err.splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


def _pump(pipe: Any, sink: bytearray) -> None:
    for chunk in iter(lambda: pipe.read1(65536), b""):
        sink.extend(chunk)


def spawn(
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    module: str = "msp_example",
    port: int | None = None,
    script: Path | None = None,
) -> Process:
    """Start ``python -m module`` (or ``script``) with only ``BASE_ENV`` + ``env`` (+ ``PORT``)."""
    full_env = {**BASE_ENV, **(env or {})}
    if port is not None:
        full_env["PORT"] = str(port)
    command = [sys.executable, str(script)] if script else [sys.executable, "-m", module]
    popen = subprocess.Popen([*command, *args], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    return Process(popen, port)


@contextlib.contextmanager
def running(env: Mapping[str, str] | None = None, **kwargs: Any) -> Iterator[Process]:
    process = spawn(env, port=kwargs.pop("port", None) or free_port(), **kwargs)
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Recorded], tuple[int, dict[str, str], bytes]]


class RecordingServer:
    """A local HTTP server that records every request (gzip bodies decoded) and answers via ``handler``."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.requests: list[Recorded] = []
        self.handler: Handler = handler or (lambda r: (200, {"content-type": "application/json"}, b"{}"))
        recorder = self

        class _H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                record = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                recorder.requests.append(record)
                status, headers, payload = recorder.handler(record)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, predicate: Callable[[Recorded], bool], timeout: float = 10.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in list(self.requests) if predicate(r)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no matching request within {timeout}s; got {[r.path for r in self.requests]}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
