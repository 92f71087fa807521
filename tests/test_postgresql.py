"""PostgreSQL against the real local server: connections, pools, tracing, migrations, faults."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import psycopg_pool
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from msp_runtime import testing
from msp_runtime.postgresql import MigrationError, PostgreSQLContract, PostgreSQLNotConfiguredError

from .support import ROOT, TCPProxy, free_port

DSN = "host=127.0.0.1 port={port} user=postgres dbname={{{{ .Database }}}} connect_timeout=3"


def contract_for(port: int = 5432) -> PostgreSQLContract:
    return testing.service_contract({"PGDSN": DSN.format(port=port)}).postgresql


def test_connect_and_traced_queries(pg_database: str, spans: InMemorySpanExporter) -> None:
    with contract_for().connect(pg_database) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (pg_database,)
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t VALUES (%s), (%s)", (987654, 123987))
    by_name = {s.name: s for s in spans.get_finished_spans()}
    select = by_name[f"SELECT {pg_database}"]
    assert select.attributes is not None
    assert select.attributes["db.system.name"] == "postgresql"
    assert select.attributes["db.namespace"] == pg_database
    assert select.attributes["db.query.text"] == "SELECT current_database()"
    insert = by_name[f"INSERT {pg_database}"]
    assert insert.attributes is not None
    assert insert.attributes["db.response.returned_rows"] == 2
    recorded = str(list(insert.attributes.values()))
    assert "987654" not in recorded  # argument values are never recorded
    assert "123987" not in recorded


def test_failed_query_span_is_an_error(pg_database: str, spans: InMemorySpanExporter) -> None:
    with contract_for().connect(pg_database) as conn, pytest.raises(psycopg.errors.UndefinedTable):
        conn.execute("SELECT * FROM missing")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR"


def test_sync_pool(pg_database: str) -> None:
    pool = contract_for().open_pool(pg_database, min_size=2, max_size=4)
    try:
        pool.wait(5)
        with pool.connection() as conn:
            assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
        assert pool.get_stats()["pool_size"] == 2
    finally:
        pool.close()


async def test_async_pool_and_connection(pg_database: str, spans: InMemorySpanExporter) -> None:
    contract = contract_for()
    pool = await contract.open_async_pool(pg_database)
    try:
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT 1")
            assert await cursor.fetchone() == (1,)
    finally:
        await pool.close()
    async with await contract.connect_async(pg_database) as conn:
        cursor = await conn.execute("SELECT 2")
        assert await cursor.fetchone() == (2,)
    assert [s.name for s in spans.get_finished_spans()].count(f"SELECT {pg_database}") == 2


def test_not_configured_is_a_clear_error() -> None:
    with pytest.raises(PostgreSQLNotConfiguredError, match="PGINSTANCE and PGUSER"):
        testing.service_contract().postgresql.connect("primary")


def test_server_down_at_start_fails_within_the_timeout() -> None:
    contract = contract_for(free_port())  # nothing listens there
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        contract.connect("primary")
    pool = contract.open_pool("primary", timeout=1.0)
    try:
        with pytest.raises(psycopg_pool.PoolTimeout), pool.connection():
            pass
    finally:
        pool.close(timeout=1)
    assert time.monotonic() - started < 5


def test_pool_recovers_after_the_server_is_lost_and_back(pg_database: str) -> None:
    proxy = TCPProxy(5432)
    pool = contract_for(proxy.port).open_pool(pg_database, min_size=2, timeout=2.0)
    try:
        pool.wait(5)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

        proxy.cut()
        started = time.monotonic()
        with pytest.raises((psycopg.OperationalError, psycopg_pool.PoolTimeout)), pool.connection() as conn:
            conn.execute("SELECT 1")
        assert time.monotonic() - started < 5  # no request hangs past the pool timeout

        proxy.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                with pool.connection() as conn:
                    assert conn.execute("SELECT 1").fetchone() == (1,)
                break
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout):
                assert time.monotonic() < deadline, "pool did not recover"
                time.sleep(0.2)
    finally:
        pool.close(timeout=1)
        proxy.close()


def write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(textwrap.dedent(sql))


def test_migrations_apply_once_in_order(pg_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_users.sql", "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);")
    write(tmp_path, "0002_seed.sql", "INSERT INTO users (name) VALUES ('ada');")
    write(tmp_path, "README.md", "not a migration")
    contract = contract_for()
    assert contract.migrate(pg_database, tmp_path) == ["0001_users.sql", "0002_seed.sql"]
    assert contract.migrate(pg_database, tmp_path) == []
    write(tmp_path, "0003_more.sql", "INSERT INTO users (name) VALUES ('grace');")
    assert contract.migrate(pg_database, tmp_path) == ["0003_more.sql"]
    with contract.connect(pg_database) as conn:
        assert conn.execute("SELECT name FROM users ORDER BY id").fetchall() == [("ada",), ("grace",)]


def test_failed_migration_rolls_back_and_names_the_file(pg_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_ok.sql", "CREATE TABLE a (n int);")
    write(tmp_path, "0002_bad.sql", "CREATE TABLE b (n int); INSERT INTO nowhere VALUES (1);")
    contract = contract_for()
    with pytest.raises(MigrationError, match=r"0002_bad\.sql") as info:
        contract.migrate(pg_database, tmp_path)
    assert info.value.migration == "0002_bad.sql"
    with contract.connect(pg_database) as conn:
        assert conn.execute("SELECT to_regclass('b')").fetchone() == (None,)  # rolled back
        assert conn.execute("SELECT name FROM msp_schema_migrations").fetchall() == [("0001_ok.sql",)]


def test_changed_applied_migration_is_refused(pg_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001.sql", "CREATE TABLE a (n int);")
    contract = contract_for()
    contract.migrate(pg_database, tmp_path)
    write(tmp_path, "0001.sql", "CREATE TABLE a (n bigint);")
    with pytest.raises(MigrationError, match="changed"):
        contract.migrate(pg_database, tmp_path)


def test_migrations_raced_by_several_processes_apply_exactly_once(pg_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_counter.sql", "CREATE TABLE applied (migration text);")
    for n in range(2, 6):
        # pg_sleep widens the window in which a second applier would slip in without the lock
        write(tmp_path, f"000{n}_step.sql", f"SELECT pg_sleep(0.05); INSERT INTO applied VALUES ('{n}');")
    script = textwrap.dedent(
        f"""
        import json
        from msp_runtime import testing
        contract = testing.service_contract({{"PGDSN": {DSN.format(port=5432)!r}}}).postgresql
        print(json.dumps(contract.migrate({pg_database!r}, {str(tmp_path)!r})))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err.decode() for _, err in outputs]
    import json

    applied = [name for out, _ in outputs for name in json.loads(out.splitlines()[-1])]
    assert sorted(applied) == ["0001_counter.sql", "0002_step.sql", "0003_step.sql", "0004_step.sql", "0005_step.sql"]
    with contract_for().connect(pg_database) as conn:
        assert conn.execute("SELECT migration FROM applied ORDER BY migration").fetchall() == [
            ("2",),
            ("3",),
            ("4",),
            ("5",),
        ]


def test_query_logging_in_local_development(pg_database: str) -> None:
    import io
    import json
    import logging

    from msp_runtime import log as logs

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure(logs.LogSettings(level=logging.DEBUG, format="json_gcp"), stream)
    try:
        contract = testing.service_contract({"PGDSN": DSN.format(port=5432), "PG_QUERY_LOGGING": "true"}).postgresql
        with contract.connect(pg_database) as conn:
            conn.execute("SELECT 42")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    (entry,) = [e for e in entries if e["message"] == "postgresql query"]
    assert (entry["severity"], entry["query"]) == ("DEBUG", "SELECT 42")
    assert entry["scope"] == f"postgresql.querylog.{pg_database}"
