"""msp-runtime benchmarks, each figure next to a baseline measured in the same run.

    scripts/bench                       # full run (~3 minutes), prints a table
    scripts/bench --quick               # fewer repetitions
    scripts/bench --write docs/benchmarks.md

Everything runs on loopback: the services, wrk (the load generator), PostgreSQL, Redis, a
null OTLP receiver and a local BigQuery insertAll server. Loads are bounded in time and
connections; every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "benchmarks" / "apps"
PY = sys.executable
BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BENCH_DB = "msp_bench_primary"


@dataclass
class Row:
    section: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline else self.value / self.baseline


# -- helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def spawn(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """Start ``command`` from the project root with only ``BASE_ENV``, ``env`` and ``PORT``, output discarded."""
    return subprocess.Popen(
        command,
        env={**BASE_ENV, **env, "PORT": str(port)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def serve(command: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn(command, env, port)
    try:
        wait_ready(proc, port, env)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], port: int, env: dict[str, str], timeout: float = 30.0) -> float:
    """Seconds from now until ``/-/healthz`` answers 200 (with the diagnostics secret in ``env``, if any)."""
    secret = env.get("DIAGNOSTICS_SECRET")
    headers = {"Authorization": f"Bearer {secret}"} if secret else None
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if get(port, "/-/healthz", headers, timeout=1.0)[0] == 200:
                return time.perf_counter() - started
        except OSError:
            time.sleep(0.002)
    raise RuntimeError(f"{proc.args} not ready after {timeout}s")


def task_cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads so far, in nanosecond resolution (schedstat)."""
    return sum(int(p.read_text().split()[0]) for p in Path(f"/proc/{pid}/task").glob("*/schedstat")) / 1e9


def cold_start(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawning ``command`` to the first 200 from ``/-/healthz``, and the CPU it used meanwhile."""
    port = free_port()
    started = time.perf_counter()
    proc = spawn(command, env, port)
    try:
        wait_ready(proc, port, env)
        return time.perf_counter() - started, task_cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_PCT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Load:
    rps: float
    p50: float
    p99: float
    cpu_us: float  # server CPU per request: steadier than requests/s on a shared machine


def wrk(
    port: int, path: str, seconds: int, connections: int = 32, headers: dict[str, str] | None = None
) -> tuple[float, float, float, int]:
    """Requests/s, p50 ms, p99 ms and request count of ``path`` under wrk (1 thread, ``seconds``)."""
    url = f"http://127.0.0.1:{port}{path}"
    header_args = [arg for k, v in (headers or {}).items() for arg in ("-H", f"{k}: {v}")]
    subprocess.run(["wrk", "-t1", "-c8", "-d1s", *header_args, url], capture_output=True, check=True)  # warm up
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *header_args, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = _WRK_RPS.search(out)
    total = re.search(r"(\d+) requests in", out)
    assert match, out
    assert total, out
    pct = {p: float(v) * _UNITS[u] for p, v, u in _WRK_PCT.findall(out)}
    return float(match.group(1)), pct["50"], pct["99"], int(total.group(1))


def load(pid: int, port: int, seconds: int, headers: dict[str, str] | None = None) -> Load:
    before = task_cpu_seconds(pid)
    rps, p50, p99, count = wrk(port, "/", seconds, headers=headers)
    return Load(rps, p50, p99, (task_cpu_seconds(pid) - before) / count * 1e6)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


class NullOTLP:
    """Accepts OTLP/HTTP exports and discards them, so export cost is part of the measurement."""

    def __init__(self) -> None:
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class SlowProxy:
    """A TCP proxy that delays every reply from the server by ``delay`` seconds (a slow backend)."""

    def __init__(self, target: int, delay: float) -> None:
        self.delay = delay
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.target = target
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.delay), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                time.sleep(delay)
                dst.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def ensure_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone():
            conn.execute(f"CREATE DATABASE {BENCH_DB}")


def backend_env(redis_port: int = 6379) -> dict[str, str]:
    return {
        "PGDSN": f"host=127.0.0.1 port=5432 user=postgres dbname={BENCH_DB}",
        "REDIS_ENDPOINT": f"redis://127.0.0.1:{redis_port}/0",
    }


# -- scenarios ---------------------------------------------------------------------------

DEPLOYED = {
    "MSP": "true",
    "ENVIRONMENT_ID": "prod",
    "GOOGLE_CLOUD_PROJECT": "bench-project",
    "DIAGNOSTICS_SECRET": "bench-secret",
    "SENTRY_DSN": "http://key@127.0.0.1:9/1",  # nothing is reported: no event, no connection
}
"""What MSP's Terraform sets, less the backends; OTLP goes to a local sink instead of Google."""
BARE_ASGI = [PY, str(APPS / "bare_asgi.py")]
BARE_STARLETTE = [PY, str(APPS / "bare_starlette.py")]
RUNTIME_ASGI = [PY, str(APPS / "runtime_asgi.py")]
EXAMPLE = [PY, "-m", "msp_example"]


def bench_cold_start(runs: int) -> list[Row]:
    """Each configuration started ``runs`` times, in interleaved rounds so that a slow spell of
    the machine hits them alike; medians of wall time and of the CPU the process used."""
    ensure_database()
    otlp = NullOTLP()
    configs = {
        "bare": (BARE_ASGI, {}),
        "starlette": (BARE_STARLETTE, {}),
        "runtime": (RUNTIME_ASGI, {}),
        "example": (EXAMPLE, {}),
        "example_deployed": (EXAMPLE, {**DEPLOYED, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url}),
        "example_backends": (EXAMPLE, backend_env()),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    try:
        for _ in range(runs):
            for name, (command, env) in configs.items():
                samples[name].append(cold_start(command, env))
    finally:
        otlp.close()
    wall = {name: statistics.median(w for w, _ in s) * 1000 for name, s in samples.items()}
    cpu = {name: statistics.median(c for _, c in s) * 1000 for name, s in samples.items()}
    rows = []
    for name, label, base, base_label, target in (
        ("runtime", "runtime, raw ASGI route", "bare", "bare uvicorn", "≤ 1.3x"),
        ("example", "example, local defaults", "starlette", "bare uvicorn+starlette", "≤ 1.3x"),
        ("example_deployed", "example, as deployed (MSP, OTLP, Sentry)", "starlette", "bare uvicorn+starlette", ""),
        ("example_backends", "example, PostgreSQL + Redis", "starlette", "bare uvicorn+starlette", ""),
    ):
        rows.append(Row("cold start", label, wall[name], "ms", wall[base], base_label, target))
        rows.append(Row("cold start", f"{label}: CPU until ready", cpu[name], "ms", cpu[base], base_label))
    return rows


def instructions_until_ready(command: list[str], env: dict[str, str]) -> int:
    """User-space instructions from exec to the first 200 from ``/-/healthz``, counted by callgrind.

    Unlike wall or CPU time this does not move with the machine's load: the same count
    comes back run after run, so it tells a real change from noise.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = spawn(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command], env, port)
        try:
            wait_ready(proc, port, env, timeout=120)
            subprocess.run(["callgrind_control", "--dump=ready", str(proc.pid)], check=True, capture_output=True)
            dumps = [p for p in Path(tmp).glob("callgrind.out.*") if "summary:" in p.read_text(errors="replace")]
        finally:
            proc.kill()
            proc.wait()
        (dump,) = dumps
        summary = re.search(r"^summary: (\d+)", dump.read_text(errors="replace"), re.M)
        assert summary is not None
        return int(summary.group(1))


def bench_instructions() -> list[Row]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("[instructions: skipped, valgrind is not installed]", file=sys.stderr)
        return []
    bare = instructions_until_ready(BARE_ASGI, {})
    starlette = instructions_until_ready(BARE_STARLETTE, {})
    runtime = instructions_until_ready(RUNTIME_ASGI, {})
    example = instructions_until_ready(EXAMPLE, {})
    m, what = 1e6, "instructions until ready"
    starlette_label = "bare uvicorn+starlette"
    return [
        Row("cold start", f"runtime, raw ASGI route: {what}", runtime / m, "M", bare / m, "bare uvicorn"),
        Row("cold start", f"example, local defaults: {what}", example / m, "M", starlette / m, starlette_label),
    ]


def bench_import(runs: int) -> list[Row]:
    def wall(code: str) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([PY, "-c", code], check=True, env=BASE_ENV)
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    interpreter = wall("pass")
    runtime = wall("import msp_runtime")
    uvicorn = wall("import uvicorn")
    out = subprocess.run(
        [PY, "-X", "importtime", "-c", "import msp_runtime"], capture_output=True, text=True, env=BASE_ENV
    )
    cumulative = 0
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == "msp_runtime":
            cumulative = int(parts[1])
    wall_name = "import msp_runtime (wall, minus bare interpreter)"
    return [
        Row("import", wall_name, runtime - interpreter, "ms", uvicorn - interpreter, "import uvicorn", "< 150 ms"),
        Row("import", "import msp_runtime (-X importtime cumulative)", cumulative / 1000, "ms"),
    ]


# What Cloud Run's front end sends with most requests: a trace context it decided not to sample.
CLOUD_RUN_UNSAMPLED = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}


def bench_requests(seconds: int, rounds: int) -> list[Row]:
    """Trivial routes under wrk, tracing on at the default sampler (parent-based, always on) with
    spans exported over OTLP to a local sink. Two kinds of traffic: requests carrying Cloud Run's
    unsampled ``traceparent``, and requests with no trace header (each one a sampled root span,
    the worst case). Each service and its baseline run side by side and are loaded in turn,
    ``rounds`` times; the medians are reported."""
    rows: list[Row] = []
    otlp = NullOTLP()
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url}
    pairs = (
        ("runtime, raw ASGI route", RUNTIME_ASGI, BARE_ASGI, "bare uvicorn"),
        ("example `/` (Starlette)", EXAMPLE, BARE_STARLETTE, "bare uvicorn+starlette"),
    )
    try:
        for label, command, baseline, base_label in pairs:
            ours_port, base_port = free_port(), free_port()
            with serve(command, traced, ours_port) as ours, serve(baseline, {}, base_port) as base:
                for traffic, headers in (
                    ("Cloud Run traffic", CLOUD_RUN_UNSAMPLED),
                    ("untraced clients, 100% sampled", None),
                ):
                    measured: dict[str, list[Load]] = {"ours": [], "base": []}
                    for _ in range(rounds):
                        measured["base"].append(load(base.pid, base_port, seconds, headers))
                        measured["ours"].append(load(ours.pid, ours_port, seconds, headers))
                    o = {
                        k: statistics.median(getattr(x, k) for x in measured["ours"])
                        for k in ("rps", "p50", "p99", "cpu_us")
                    }
                    b = {
                        k: statistics.median(getattr(x, k) for x in measured["base"])
                        for k in ("rps", "p50", "p99", "cpu_us")
                    }
                    name = f"{label}, {traffic}"
                    rows += [
                        Row("requests", f"{name}: requests/s", o["rps"], "req/s", b["rps"], base_label, "≥ 0.85x"),
                        Row("requests", f"{name}: server CPU per request", o["cpu_us"], "µs", b["cpu_us"], base_label),
                        Row("requests", f"{name}: p50", o["p50"], "ms", b["p50"], base_label),
                        Row("requests", f"{name}: p99", o["p99"], "ms", b["p99"], base_label),
                    ]
    finally:
        otlp.close()
    return rows


def latencies(port: int, path: str, n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        status, body = get(port, path)
        samples.append((time.perf_counter() - started) * 1000)
        assert status in (200, 500), (status, body)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def bench_healthz(n: int) -> list[Row]:
    ensure_database()
    rows = []
    port = free_port()
    with serve(EXAMPLE, {"STATELESS_MODE": "true"}, port):
        base50, base99 = latencies(port, "/-/healthz", n)
    port = free_port()
    with serve(EXAMPLE, backend_env(), port):
        p50, p99 = latencies(port, "/-/healthz", n)
    slow = SlowProxy(6379, 0.2)
    try:
        port = free_port()
        with serve(EXAMPLE, backend_env(slow.port), port):
            s50, _ = latencies(port, "/-/healthz", max(10, n // 10))
    finally:
        slow.close()
    rows += [
        Row("healthz", "PostgreSQL + Redis checks: p50", p50, "ms", base50, "no checks (stateless)"),
        Row("healthz", "PostgreSQL + Redis checks: p99", p99, "ms", base99, "no checks (stateless)"),
        Row("healthz", "Redis slowed by 200 ms: p50", s50, "ms", 200.0, "the slow backend alone", "≈ 1x (concurrent)"),
    ]
    return rows


def bench_bigquery(rows_batched: int, rows_single: int) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    from msp_runtime import testing
    from tests.support import FakeBigQuery

    server = FakeBigQuery()

    async def write(n: int, batch_size: int) -> float:
        contract = testing.service_contract(
            {"BIGQUERY_PROJECT_ID": "proj", "BIGQUERY_DATASET_ID": "ds", "BIGQUERY_EMULATOR_HOST": server.url}
        ).bigquery
        writer = contract.table_writer("events", batch_size=batch_size, flush_interval=60)
        started = time.perf_counter()
        for i in range(n):
            await writer.write({"name": "event", "n": i, "metadata": {"k": "v" * 32}})
            if batch_size == 1:
                await writer.flush()
        await writer.close()
        elapsed = time.perf_counter() - started
        contract.close()
        return n / elapsed

    try:
        batched = asyncio.run(write(rows_batched, 500))
        single = asyncio.run(write(rows_single, 1))
    finally:
        server.close()
    return [Row("bigquery", "writer rows/s, batches of 500", batched, "rows/s", single, "one insertAll per row")]


def bench_rss() -> list[Row]:
    values = {}
    for name, command in (("bare", BARE_STARLETTE), ("example", EXAMPLE)):
        port = free_port()
        with serve(command, {}, port) as proc:
            for _ in range(50):
                get(port, "/")
            time.sleep(0.5)
            values[name] = peak_rss_mib(proc.pid)
    return [Row("memory", "peak RSS, idle example", values["example"], "MiB", values["bare"], "bare uvicorn+starlette")]


# -- report ------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        "| section | measurement | value | baseline | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        baseline = f"{r.baseline:,.1f} {r.unit} ({r.baseline_name})" if r.baseline is not None else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        lines.append(f"| {r.section} | {r.name} | {r.value:,.1f} {r.unit} | {baseline} | {ratio} | {r.target} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, shorter loads")
    parser.add_argument("--write", type=Path, help="also write the table into this Markdown file")
    sections_help = "comma-separated sections: import,cold,instructions,requests,healthz,bigquery,rss"
    parser.add_argument("--only", help=sections_help)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed for the request benchmark: apt-get install wrk")
    quick = args.quick
    sections: dict[str, Callable[[], list[Row]]] = {
        "import": lambda: bench_import(5 if quick else 15),
        "cold": lambda: bench_cold_start(3 if quick else 11),
        "instructions": lambda: [] if quick else bench_instructions(),
        "requests": lambda: bench_requests(3 if quick else 5, 1 if quick else 3),
        "healthz": lambda: bench_healthz(100 if quick else 400),
        "bigquery": lambda: bench_bigquery(2000 if quick else 10000, 100 if quick else 300),
        "rss": bench_rss,
    }
    chosen = args.only.split(",") if args.only else list(sections)
    rows: list[Row] = []
    for name in chosen:
        started = time.perf_counter()
        rows += sections[name]()
        print(f"[{name}: {time.perf_counter() - started:.1f}s]", file=sys.stderr)
    report = table(rows)
    print(report)
    if args.write:
        text = args.write.read_text() if args.write.exists() else ""
        begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
        block = f"{begin}\n{report}\n{end}"
        if begin in text and end in text:
            text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
        else:
            text = text + "\n" + block + "\n"
        args.write.write_text(text)
    print(json.dumps({r.name: round(r.value, 2) for r in rows}), file=sys.stderr)


if __name__ == "__main__":
    main()
