"""Background routines: long-running work that starts with the service and stops with it.

A routine's :meth:`~Routine.start` runs until :meth:`~Routine.stop` asks it to end. The
runtime treats a ``start`` that returns or raises on its own as a failure and shuts the
service down with a non-zero exit code, rather than hanging as upstream does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from .log import Logger, get_logger

__all__ = ["PeriodicRoutine", "Routine"]


@runtime_checkable
class Routine(Protocol):
    """Something the runtime starts after ``initialize`` and stops on shutdown."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Run until :meth:`stop` is called."""

    async def stop(self) -> None:
        """Ask :meth:`start` to finish and wait for it; the runtime bounds the wait."""


class PeriodicRoutine:
    """Call ``work`` every ``interval`` seconds until stopped; errors are logged, not fatal."""

    def __init__(
        self,
        name: str,
        interval: float,
        work: Callable[[], Awaitable[None]],
        *,
        logger: Logger | None = None,
    ) -> None:
        self._name = name
        self._interval = interval
        self._work = work
        self._stopping = asyncio.Event()
        self._log = logger or get_logger(f"msp.routine.{name}")

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._work()
            except Exception:
                self._log.exception("periodic routine failed", routine=self._name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def stop(self) -> None:
        self._stopping.set()
