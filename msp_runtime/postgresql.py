"""PostgreSQL: Cloud SQL with IAM auth when deployed, a ``PGDSN`` template locally.

With ``PGINSTANCE`` and ``PGUSER`` (set by MSP), connections go through the Cloud SQL
Python Connector: automatic IAM database authentication, the instance's private IP,
lazy certificate refresh (Cloud Run throttles CPU outside requests), one connector per
process rather than upstream's dialer per call. Locally, ``PGDSN`` is rendered with the
database name (``{{ .Database }}``, as upstream's Go template) and libpq's own ``PG*``
variables fill in whatever it leaves out.

Every query runs on a traced cursor: one span per ``execute`` (``db.system.name``,
``db.namespace``, ``db.query.text``, ``db.response.returned_rows``). Argument values are
never recorded. ``psycopg`` is imported on first use only.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .env import Env
from .log import get_logger

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["MIGRATIONS_TABLE", "MigrationError", "PostgreSQLContract", "PostgreSQLNotConfiguredError"]

_DATABASE_PLACEHOLDER = re.compile(r"\{\{\s*\.Database\s*\}\}")
MIGRATIONS_TABLE = "msp_schema_migrations"
_MIGRATION_LOCK_KEY = int.from_bytes(hashlib.sha256(b"msp_runtime.migrations").digest()[:8], "big", signed=True)


class PostgreSQLNotConfiguredError(RuntimeError):
    """Raised when a connection is requested but neither ``PGDSN`` nor ``PGINSTANCE``/``PGUSER`` is set."""

    def __init__(self) -> None:
        super().__init__("missing required PostgreSQL configuration: set PGINSTANCE and PGUSER, or PGDSN locally")


class MigrationError(RuntimeError):
    """A migration failed or an applied migration was changed afterwards."""

    def __init__(self, migration: str, message: str) -> None:
        self.migration = migration
        super().__init__(f"migration {migration}: {message}")


@dataclass
class _CloudSQLState:
    connector: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True, kw_only=True)
class PostgreSQLContract:
    """How to reach PostgreSQL. ``configured`` is true with ``PGDSN``, or ``PGINSTANCE`` and ``PGUSER``."""

    instance: str | None
    """``PGINSTANCE``: Cloud SQL connection name ``project:region:instance``."""
    user: str | None
    """``PGUSER``: Cloud SQL IAM user, e.g. ``svc-sa@project.iam``."""
    dsn_template: str | None = field(repr=False)
    """``PGDSN`` (local development only), with ``{{ .Database }}`` for the database name."""
    query_logging: bool = False
    """``PG_QUERY_LOGGING`` (local development only): log every query at debug level."""
    connect_timeout: int = 10
    """Seconds to wait for a new connection."""
    connector_options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Extra ``Connector`` arguments, e.g. ``credentials`` or ``sqladmin_api_endpoint`` (tests)."""
    _cloudsql: _CloudSQLState = field(default_factory=_CloudSQLState, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Env, *, msp: bool) -> PostgreSQLContract:
        dsn = env.get_optional(
            "PGDSN", "local development PostgreSQL DSN template, e.g. 'dbname={{ .Database }}'", secret=True
        )
        if dsn is not None and msp:
            env.add_error("PGDSN", "PGDSN is not allowed with MSP=true")
        query_logging = env.get_bool("PG_QUERY_LOGGING", False, "log PostgreSQL queries (local development only)")
        if query_logging and msp:
            env.add_error("PG_QUERY_LOGGING", "PG_QUERY_LOGGING=true is not allowed with MSP=true")
        instance = env.get_optional("PGINSTANCE", "Cloud SQL instance connection name")
        user = env.get_optional("PGUSER", "Cloud SQL IAM database user")
        if instance is not None and instance.count(":") != 2:
            env.add_error("PGINSTANCE", f"expected project:region:instance, got {instance!r}")
        return cls(
            instance=instance or None,
            user=user or None,
            dsn_template=dsn or None,
            query_logging=query_logging,
        )

    @property
    def configured(self) -> bool:
        # Upstream tests `PGUSER == nil` here, so PGINSTANCE+PGUSER read as unconfigured.
        return self.dsn_template is not None or (self.instance is not None and self.user is not None)

    @property
    def uses_cloudsql(self) -> bool:
        return self.dsn_template is None and self.configured

    def dsn(self, database: str) -> str:
        """The local connection string for ``database`` (``PGDSN`` rendered)."""
        if self.dsn_template is None:
            raise PostgreSQLNotConfiguredError()
        return _DATABASE_PLACEHOLDER.sub(database, self.dsn_template)

    # -- connections ---------------------------------------------------------------

    def connect(self, database: str, **kwargs: Any) -> psycopg.Connection[Any]:
        """One connection to ``database`` (close it yourself, or use it as a context manager)."""
        if self.uses_cloudsql:
            return self._cloudsql_connect(database, **kwargs)
        import psycopg

        return psycopg.connect(self.dsn(database), **self._connection_kwargs(database, kwargs))

    async def connect_async(self, database: str, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        """One asyncio connection to ``database``."""
        if self.uses_cloudsql:
            return await _adopt_async(asyncio.to_thread(self._cloudsql_connect, database, **kwargs), database, self)
        import psycopg

        return await psycopg.AsyncConnection.connect(
            self.dsn(database), **self._connection_kwargs(database, kwargs, asynchronous=True)
        )

    def open_pool(
        self, database: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0, **pool_kwargs: Any
    ) -> psycopg_pool.ConnectionPool[Any]:
        """A connection pool for ``database``, opened without waiting for the server.

        Connections are checked before they are handed out, so the pool recovers on its
        own after the server restarts; ``timeout`` bounds how long ``connection()`` waits.
        """
        import psycopg
        import psycopg_pool

        contract = self
        connection_class: type[psycopg.Connection[Any]]
        if self.uses_cloudsql:

            class _Connection(psycopg.Connection[Any]):
                @classmethod
                def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
                    return contract._cloudsql_connect(database, **kwargs)

            conninfo, connection_class, kwargs = "", _Connection, {}
        else:
            conninfo, connection_class, kwargs = (
                self.dsn(database),
                psycopg.Connection,
                self._connection_kwargs(database, {}),
            )
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            conninfo,
            connection_class=connection_class,
            kwargs=kwargs,
            check=psycopg_pool.ConnectionPool.check_connection,
            **_pool_limits(database, min_size, max_size, timeout, pool_kwargs),
        )
        pool.open(wait=False)
        return pool

    async def open_async_pool(
        self, database: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0, **pool_kwargs: Any
    ) -> psycopg_pool.AsyncConnectionPool[Any]:
        """The asyncio twin of :meth:`open_pool`."""
        import psycopg
        import psycopg_pool

        contract = self
        async_class: type[psycopg.AsyncConnection[Any]]
        if self.uses_cloudsql:

            class _AsyncConnection(psycopg.AsyncConnection[Any]):
                @classmethod
                async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
                    return await contract.connect_async(database, **kwargs)

            conninfo, async_class, kwargs = "", _AsyncConnection, {}
        else:
            conninfo, async_class, kwargs = (
                self.dsn(database),
                psycopg.AsyncConnection,
                self._connection_kwargs(database, {}, asynchronous=True),
            )
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            conninfo,
            connection_class=async_class,
            kwargs=kwargs,
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            **_pool_limits(database, min_size, max_size, timeout, pool_kwargs),
        )
        await pool.open(wait=False)
        return pool

    def close(self) -> None:
        """Close the Cloud SQL connector, if one was started."""
        with self._cloudsql.lock:
            connector, self._cloudsql.connector = self._cloudsql.connector, None
        if connector is not None:
            connector.close()

    def _connection_kwargs(self, database: str, kwargs: dict[str, Any], asynchronous: bool = False) -> dict[str, Any]:
        from . import _pgtrace

        options = {"connect_timeout": self.connect_timeout, **kwargs}
        options.setdefault(
            "cursor_factory",
            _pgtrace.async_cursor_class(database, self.query_logging)
            if asynchronous
            else _pgtrace.cursor_class(database, self.query_logging),
        )
        return options

    def _connector(self) -> Any:
        with self._cloudsql.lock:  # pool workers connect concurrently: one connector for all
            return self._cloudsql.connector or self._start_connector()

    def _start_connector(self) -> Any:
        from google.cloud.sql.connector import Connector, IPTypes, RefreshStrategy

        self._cloudsql.connector = Connector(
            ip_type=IPTypes.PRIVATE,  # MSP's instances are reached over the VPC
            enable_iam_auth=True,
            refresh_strategy=RefreshStrategy.LAZY,  # Cloud Run throttles CPU between requests
            timeout=self.connect_timeout,
            **self.connector_options,
        )
        return self._cloudsql.connector

    def _cloudsql_connect(self, database: str, **kwargs: Any) -> psycopg.Connection[Any]:
        if self.instance is None or self.user is None:
            raise PostgreSQLNotConfiguredError()
        from . import _pgtrace

        kwargs.pop("connect_timeout", None)  # the connector has its own timeout
        kwargs.setdefault("cursor_factory", _pgtrace.cursor_class(database, False))
        conn: psycopg.Connection[Any] = self._connector().connect(
            self.instance, "psycopg", user=self.user, db=database, enable_iam_auth=True, ip_type="private", **kwargs
        )
        return conn

    # -- migrations ----------------------------------------------------------------

    def migrate(self, database: str, directory: str | Path) -> list[str]:
        """Apply the ``*.sql`` files in ``directory`` that are not applied yet, in name order.

        Runs under a PostgreSQL advisory lock, so N instances starting together apply each
        migration exactly once; each file runs in its own transaction. Returns the names
        applied by this call. An applied file whose content changed raises
        :class:`MigrationError`.
        """
        with self.connect(database) as conn:
            return apply_migrations(conn, sorted(Path(directory).glob("*.sql")))


def _pool_limits(database: str, min_size: int, max_size: int, timeout: float, extra: dict[str, Any]) -> dict[str, Any]:
    """Pool settings shared by the sync and async pools; ``extra`` overrides them."""
    return {
        "min_size": min_size,
        "max_size": max_size,
        "timeout": timeout,
        "name": f"msp-{database}",
        "open": False,
        **extra,
    }


def apply_migrations(conn: psycopg.Connection[Any], files: Iterable[Path]) -> list[str]:
    """Apply ``files`` on ``conn`` once each, under an advisory lock (see :meth:`PostgreSQLContract.migrate`)."""
    log = get_logger("msp.postgresql.migrations")
    conn.autocommit = True
    applied_now: list[str] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            " name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = dict(conn.execute(f"SELECT name, checksum FROM {MIGRATIONS_TABLE}").fetchall())
        for path in files:
            sql = path.read_text()
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if path.name in done:
                if done[path.name] != checksum:
                    raise MigrationError(path.name, "already applied, but the file has changed since")
                continue
            started = time.monotonic()
            try:
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(
                        f"INSERT INTO {MIGRATIONS_TABLE} (name, checksum) VALUES (%s, %s)", (path.name, checksum)
                    )
            except Exception as exc:
                if isinstance(exc, MigrationError):
                    raise
                raise MigrationError(path.name, str(exc)) from exc
            log.info("applied migration", migration=path.name, elapsed=round(time.monotonic() - started, 3))
            applied_now.append(path.name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
    return applied_now


async def _adopt_async(connecting: Any, database: str, contract: PostgreSQLContract) -> psycopg.AsyncConnection[Any]:
    """Turn a Cloud SQL connection made by the (sync-only) connector into an ``AsyncConnection``.

    The connector hands psycopg a local socket it proxies to the instance; psycopg's
    async connection wraps the same libpq connection, so the socket keeps working.
    """
    import psycopg

    from . import _pgtrace

    sync_conn = await connecting
    aconn: psycopg.AsyncConnection[Any] = psycopg.AsyncConnection(sync_conn.pgconn)
    aconn.cursor_factory = _pgtrace.async_cursor_class(database, contract.query_logging)
    sync_conn._pool = None  # the wrapper is dropped, not the connection
    return aconn
