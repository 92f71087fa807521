"""Cloud Run Jobs: the execution a job runs as."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field

from .env import Env

__all__ = ["JobExecution", "uuid7"]


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7), as upstream uses for execution ids."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 64 & 0xFFF) << 64 | 0b10 << 62 | rand & (2**62 - 1)
    return uuid.UUID(int=value)


@dataclass(frozen=True, kw_only=True)
class JobExecution:
    """What Cloud Run tells a job task about itself.

    ``id`` is a fresh UUIDv7, as upstream uses for Sentry check-ins (Sentry drops
    check-ins whose id is not a UUID); the Cloud Run execution name is ``execution``.
    """

    id: str = field(default_factory=lambda: str(uuid7()))
    job: str | None = None
    """``CLOUD_RUN_JOB``."""
    execution: str | None = None
    """``CLOUD_RUN_EXECUTION``, e.g. ``my-job-abcde``."""
    task_index: int = 0
    """``CLOUD_RUN_TASK_INDEX``: this task's index, 0-based."""
    task_attempt: int = 0
    """``CLOUD_RUN_TASK_ATTEMPT``: how many times this task was retried, 0-based."""
    task_count: int = 1
    """``CLOUD_RUN_TASK_COUNT``: how many tasks the execution runs."""

    @classmethod
    def from_env(cls, env: Env) -> JobExecution:
        job = env.get_optional("CLOUD_RUN_JOB", "Cloud Run job name (set by Cloud Run)")
        execution = env.get_optional("CLOUD_RUN_EXECUTION", "Cloud Run job execution name (set by Cloud Run)")
        index = env.get_int("CLOUD_RUN_TASK_INDEX", 0, "index of this task in the execution (set by Cloud Run)")
        attempt = env.get_int("CLOUD_RUN_TASK_ATTEMPT", 0, "retry attempt of this task (set by Cloud Run)")
        count = env.get_int("CLOUD_RUN_TASK_COUNT", 1, "number of tasks in the execution (set by Cloud Run)")
        if count < 1:
            env.add_error("CLOUD_RUN_TASK_COUNT", f"task count {count} must be at least 1")
        elif not 0 <= index < count:
            env.add_error("CLOUD_RUN_TASK_INDEX", f"task index {index} is outside 0..{count - 1}")
        if attempt < 0:
            env.add_error("CLOUD_RUN_TASK_ATTEMPT", f"task attempt {attempt} is negative")
        return cls(
            job=job or None, execution=execution or None, task_index=index, task_attempt=attempt, task_count=count
        )

    @property
    def task_name(self) -> str | None:
        """``<execution>-<index>-<attempt>``, upstream's older execution id, for logs."""
        if not self.execution:
            return None
        return f"{self.execution}-{self.task_index}-{self.task_attempt}"
