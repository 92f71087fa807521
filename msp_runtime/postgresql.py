"""PostgreSQL: Cloud SQL with IAM auth when deployed, a ``PGDSN`` template locally."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .env import Env

__all__ = ["PostgreSQLContract"]

_DATABASE_PLACEHOLDER = re.compile(r"\{\{\s*\.Database\s*\}\}")


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
        return cls(instance=instance or None, user=user or None, dsn_template=dsn or None, query_logging=query_logging)

    @property
    def configured(self) -> bool:
        # Upstream tests `PGUSER == nil` here, so PGINSTANCE+PGUSER read as unconfigured.
        return self.dsn_template is not None or (self.instance is not None and self.user is not None)

    def dsn(self, database: str) -> str:
        """The local connection string for ``database`` (``PGDSN`` rendered)."""
        if self.dsn_template is None:
            raise ValueError("PGDSN is not set")
        return _DATABASE_PLACEHOLDER.sub(database, self.dsn_template)
