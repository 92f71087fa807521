"""The backends the example uses when the contract configures them.

Each one is optional: a backend that is not configured is reported once at startup; one
that is configured but down at startup is logged as an error and reported by
``/-/healthz`` (500, naming it) until it is back. Health checks run concurrently.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msp_runtime import Contract, Logger, PeriodicRoutine, Routine, check_all

if TYPE_CHECKING:
    import psycopg_pool
    import redis.asyncio

    from msp_runtime.bigquery import TableWriter

MIGRATIONS = Path(__file__).parent / "migrations"
DATABASE = "primary"
COUNTER_KEY = "msp-example:events"


@dataclass(frozen=True)
class Event:
    """A row of the BigQuery ``example`` table: name STRING, metadata JSON, created_at TIMESTAMP."""

    name: str
    created_at: datetime.datetime
    metadata: dict[str, Any] | None = None


def event(name: str, **metadata: Any) -> Event:
    return Event(name=name, created_at=datetime.datetime.now(datetime.UTC), metadata=metadata or None)


@dataclass
class Backends:
    contract: Contract | None = None
    logger: Logger | None = None
    postgresql: psycopg_pool.AsyncConnectionPool[Any] | None = None
    redis: redis.asyncio.Redis | None = None
    bigquery: TableWriter | None = None
    migrated: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def disabled(cls) -> Backends:
        return cls()

    @classmethod
    async def connect(cls, contract: Contract, logger: Logger) -> Backends:
        """Set up every configured backend; a backend that is down does not stop the service."""
        backends = cls(contract, logger)
        off = []
        if contract.postgresql.configured:
            backends.postgresql = await contract.postgresql.open_async_pool(DATABASE, timeout=5.0)
            await backends.migrate()
        else:
            off.append("postgresql")
        if contract.redis.configured:
            backends.redis = contract.redis.async_client()
            try:
                await backends.redis.ping()
                logger.info("redis connection success")
            except Exception as exc:
                logger.error("redis unavailable at startup", backend="redis", error=str(exc))
        else:
            off.append("redis")
        if contract.bigquery.configured:
            backends.bigquery = contract.bigquery.table_writer("example")
            await backends.bigquery.write(event("service.initialized"))
        else:
            off.append("bigquery")
        if off:
            logger.info("backends not configured, running without them", off=off)
        return backends

    async def migrate(self) -> None:
        """Apply the example's migrations; until that works, log it and try again later."""
        if self.migrated.is_set() or self.contract is None:
            return
        try:
            applied = await asyncio.wait_for(
                asyncio.to_thread(self.contract.postgresql.migrate, DATABASE, MIGRATIONS), 10
            )
        except Exception as exc:
            assert self.logger is not None
            self.logger.error("postgresql unavailable, migrations pending", backend="postgresql", error=str(exc))
            return
        self.migrated.set()
        assert self.logger is not None
        self.logger.info("postgresql connection success", migrations_applied=applied)

    def routines(self) -> list[Routine]:
        if self.postgresql is None or self.migrated.is_set():
            return []
        return [PeriodicRoutine("postgresql-migrations", 5.0, self.migrate)]

    # -- what the HTTP API does with them ------------------------------------------------

    async def record(self, name: str) -> dict[str, Any]:
        """Store an event in every configured backend; report what each did."""
        done: dict[str, Any] = {}
        if self.postgresql is not None:
            async with self.postgresql.connection() as conn:
                cursor = await conn.execute("INSERT INTO example_events (name) VALUES (%s) RETURNING id", (name,))
                row = await cursor.fetchone()
                done["postgresql"] = {"id": row[0] if row else None}
        if self.redis is not None:
            done["redis"] = {"count": await self.redis.incr(COUNTER_KEY)}
        if self.bigquery is not None:
            await self.bigquery.write(event("example.recorded", event_name=name))
            done["bigquery"] = {"buffered": self.bigquery.buffered}
        return done

    async def recent(self, limit: int = 10) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.postgresql is not None:
            async with self.postgresql.connection() as conn:
                cursor = await conn.execute("SELECT id, name FROM example_events ORDER BY id DESC LIMIT %s", (limit,))
                found["postgresql"] = [{"id": i, "name": n} for i, n in await cursor.fetchall()]
        if self.redis is not None:
            found["redis"] = {"count": int(await self.redis.get(COUNTER_KEY) or 0)}
        return found

    async def healthy(self, query: dict[str, list[str]]) -> None:
        """Check every configured backend at once, each with its own timeout."""
        checks: dict[str, Callable[[], Awaitable[object]]] = {}
        if self.postgresql is not None:
            checks["postgresql"] = self._check_postgresql
        if self.redis is not None:
            checks["redis"] = self.redis.ping
        if self.bigquery is not None:
            checks["bigquery"] = self._check_bigquery
        await check_all(checks, timeout=2.0)

    async def _check_postgresql(self) -> None:
        assert self.postgresql is not None
        async with self.postgresql.connection(timeout=2.0) as conn:
            await conn.execute("SELECT current_user")
        if not self.migrated.is_set():
            raise RuntimeError("migrations not applied yet")

    async def _check_bigquery(self) -> None:
        assert self.bigquery is not None
        await self.bigquery.write(event("service.healthy"))
        await self.bigquery.flush()

    async def close(self) -> None:
        if self.bigquery is not None:
            await self.bigquery.close()
        if self.postgresql is not None:
            await self.postgresql.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.contract is not None:
            self.contract.postgresql.close()
            self.contract.bigquery.close()
