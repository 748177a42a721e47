"""Waiting for a condition with a deadline, instead of sleeping and hoping."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

from wardwatch.core.errors import WaitTimeoutError

__all__ = ["wait_for"]


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    *,
    what: str | None = None,
    interval: float = 0.001,
    max_interval: float = 0.05,
) -> None:
    """Return as soon as ``predicate()`` is true; raise :class:`WaitTimeoutError` after ``timeout`` s.

    ``predicate`` may be a plain or an async callable; it is polled with a back-off from
    ``interval`` to ``max_interval`` seconds, and once more at the deadline. Its exceptions
    propagate. ``what`` names the condition in the error message.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = interval
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            name = what or getattr(predicate, "__qualname__", repr(predicate))
            raise WaitTimeoutError(f"timed out after {timeout:g} s waiting for {name}")
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, max_interval)
