"""Redis: clients for ``REDIS_ENDPOINT`` (``redis://`` or MSP's ``rediss://:AUTH@host:port``).

MSP mounts Memorystore's CA at ``/etc/ssl/custom-certs/redis-ca-cert.pem`` and lists
that directory in ``SSL_CERT_DIR``. Go reads every file there; OpenSSL (and so Python)
only finds hashed names such as ``<hash>.0``, so the mounted CA would be ignored and the
TLS handshake would fail. The clients built here load every certificate in the
``SSL_CERT_DIR`` directories explicitly. Commands are traced (one client span each).
``redis`` is imported on first use only.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .env import Env

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RedisContract", "RedisNotConfiguredError", "load_ca_certificates"]

_PEM_MARKER = "-----BEGIN CERTIFICATE-----"


class RedisNotConfiguredError(RuntimeError):
    """Raised when a client is requested but ``REDIS_ENDPOINT`` is not set."""

    def __init__(self) -> None:
        super().__init__("no Redis endpoint provided: set REDIS_ENDPOINT")


@dataclass(frozen=True, kw_only=True)
class RedisContract:
    """How to reach Redis; the endpoint carries a password and stays out of ``repr``."""

    endpoint: str | None = field(repr=False)
    """``REDIS_ENDPOINT``."""
    cert_dirs: tuple[str, ...] = ()
    """``SSL_CERT_DIR`` entries, whose certificates verify a ``rediss://`` server."""
    timeout: float = 5.0
    """Seconds for connecting and for each command."""

    @classmethod
    def from_env(cls, env: Env) -> RedisContract:
        endpoint = env.get_optional(
            "REDIS_ENDPOINT", "full Redis address, including any prerequisite authentication", secret=True
        )
        if endpoint is not None and not endpoint.startswith(("redis://", "rediss://", "unix://")):
            env.add_error("REDIS_ENDPOINT", "must be a redis://, rediss:// or unix:// URL")
        cert_dir = env.get_optional("SSL_CERT_DIR", "directories of CA certificates, ':'-separated (set by MSP)")
        dirs = tuple(d for d in (cert_dir or "").split(os.pathsep) if d)
        return cls(endpoint=endpoint or None, cert_dirs=dirs)

    @property
    def configured(self) -> bool:
        return self.endpoint is not None

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.endpoint is None:
            raise RedisNotConfiguredError()
        options: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "health_check_interval": 30,
        }
        if self.endpoint.startswith("rediss://") and self.cert_dirs:
            ca_data = load_ca_certificates(self.cert_dirs)
            if ca_data:
                options["ssl_ca_data"] = ca_data
        return {**options, **kwargs}

    def client(self, **kwargs: Any) -> redis.Redis:
        """A traced :class:`redis.Redis` for ``REDIS_ENDPOINT``; ``kwargs`` override the defaults."""
        from . import _redistrace

        options = self._options(kwargs)
        assert self.endpoint is not None
        return _redistrace.TracedRedis.from_url(self.endpoint, **options)

    def async_client(self, **kwargs: Any) -> redis.asyncio.Redis:
        """A traced :class:`redis.asyncio.Redis` for ``REDIS_ENDPOINT``."""
        from . import _redistrace

        options = self._options(kwargs)
        assert self.endpoint is not None
        return _redistrace.TracedAsyncRedis.from_url(self.endpoint, **options)


@functools.cache
def load_ca_certificates(directories: tuple[str, ...]) -> str:
    """Every PEM certificate in ``directories`` (any file name, as Go reads them), concatenated."""
    pems: list[str] = []
    for directory in directories:
        try:
            entries = sorted(Path(directory).iterdir())
        except OSError:
            continue  # a missing directory is not an error, as for Go and OpenSSL
        for path in entries:
            try:
                if not path.is_file():
                    continue
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if _PEM_MARKER in text:
                pems.append(text.strip())
    return "\n".join(pems) + "\n" if pems else ""
