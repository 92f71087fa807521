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
            disable_nagle_algorithm = True  # headers and body go out in two writes

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
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

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


# -- OTLP and Sentry wire formats --------------------------------------------------------


def otlp_spans(server: RecordingServer) -> list[dict[str, Any]]:
    """Every span the server received on ``/v1/traces``, flattened with its resource attributes."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = []
    for request in [r for r in server.requests if r.path == "/v1/traces"]:
        message = ExportTraceServiceRequest.FromString(request.body)
        for resource_spans in message.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "status": span.status.code,
                            "attributes": _attributes(span.attributes),
                            "resource": resource,
                            "scope": scope_spans.scope.name,
                        }
                    )
    return spans


def otlp_metrics(server: RecordingServer) -> dict[str, list[Any]]:
    """The data points of each metric in the last export that carried it (values are cumulative)."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    found: dict[str, list[Any]] = {}
    for request in [r for r in server.requests if r.path == "/v1/metrics"]:
        message = ExportMetricsServiceRequest.FromString(request.body)
        for resource_metrics in message.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    found[metric.name] = list(getattr(metric, kind).data_points)
    return found


def _attributes(attributes: Any) -> dict[str, Any]:
    out = {}
    for kv in attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
    return out


def sentry_items(server: RecordingServer) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every ``(item header, payload)`` in the Sentry envelopes the server received."""
    items = []
    for request in [r for r in server.requests if r.path.endswith("/envelope/")]:
        lines = request.body.split(b"\n")[1:]  # the first line is the envelope header
        lines = [line for line in lines if line]
        items += [(json.loads(h), json.loads(p)) for h, p in zip(lines[::2], lines[1::2], strict=True)]
    return items


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes from ``src`` to ``dst`` until either side ends, then shut both down."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class TCPProxy:
    """A TCP proxy in front of a real server that a test can cut and restore (fault tests)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        """Stop listening and reset every open connection, as if the server went away."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the pipe threads blocked in recv
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self.cut()


# -- TLS and throwaway servers ------------------------------------------------------------


@dataclass
class TLSFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def make_tls(directory: Path, host: str = "127.0.0.1") -> TLSFiles:
    """A CA and a server certificate for ``host`` (as an IP SAN), written under ``directory``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "msp test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(directory / "ca.pem", directory / "ca.key", directory / "server.pem", directory / "server.key")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.ca_key.write_bytes(
        ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


@contextlib.contextmanager
def redis_server(*extra: str) -> Iterator[int]:
    """A throwaway ``redis-server`` on a free port (never the shared one); yields the port."""
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra]
    if "--tls-port" in extra:
        args[2] = "0"  # TLS only: the plain port is off
        port = int(extra[extra.index("--tls-port") + 1])
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert proc.poll() is None, f"redis-server exited with {proc.returncode}"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


# -- BigQuery insertAll ------------------------------------------------------------------

Reply = tuple[int, dict[str, str], bytes]


class FakeBigQuery(RecordingServer):
    """Speaks insertAll: records rows, answers with scripted replies (then success)."""

    def __init__(self) -> None:
        self.script: list[Callable[[dict[str, Any]], Reply]] = []
        self.inserted: list[dict[str, Any]] = []
        super().__init__(self._reply)

    def _reply(self, request: Recorded) -> Reply:
        body = json.loads(request.body)
        reply = self.script.pop(0)(body) if self.script else ok(body)
        if reply[0] == 200:
            errors = {e["index"] for e in json.loads(reply[2]).get("insertErrors", [])}
            if not errors:  # like BigQuery: a request with an invalid row inserts nothing
                self.inserted += body["rows"]
        return reply


def ok(body: dict[str, Any]) -> Reply:
    return 200, {"content-type": "application/json"}, b'{"kind": "bigquery#tableDataInsertAllResponse"}'


def status(code: int) -> Callable[[dict[str, Any]], Reply]:
    message = json.dumps({"error": {"code": code, "message": f"status {code}", "errors": [{"reason": "backendError"}]}})
    return lambda body: (code, {"content-type": "application/json"}, message.encode())


def reject(index: int, reason: str = "invalid") -> Callable[[dict[str, Any]], Reply]:
    def reply(body: dict[str, Any]) -> Reply:
        errors = [
            {"index": i, "errors": [{"reason": reason if i == index else "stopped", "message": f"row {i}: {reason}"}]}
            for i in range(len(body["rows"]))
        ]
        return 200, {"content-type": "application/json"}, json.dumps({"insertErrors": errors}).encode()

    return reply
