"""Redis: a client for ``REDIS_ENDPOINT`` (``redis://`` or ``rediss://:AUTH@host:port``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .env import Env

__all__ = ["RedisContract"]


@dataclass(frozen=True, kw_only=True)
class RedisContract:
    """How to reach Redis; the endpoint carries a password and stays out of ``repr``."""

    endpoint: str | None = field(repr=False)
    """``REDIS_ENDPOINT``."""

    @classmethod
    def from_env(cls, env: Env) -> RedisContract:
        endpoint = env.get_optional(
            "REDIS_ENDPOINT", "full Redis address, including any prerequisite authentication", secret=True
        )
        if endpoint is not None and not endpoint.startswith(("redis://", "rediss://", "unix://")):
            env.add_error("REDIS_ENDPOINT", "must be a redis://, rediss:// or unix:// URL")
        return cls(endpoint=endpoint or None)

    @property
    def configured(self) -> bool:
        return self.endpoint is not None
