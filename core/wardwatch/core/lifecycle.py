"""Opening an object's resources on its :class:`~contextlib.AsyncExitStack`: all of them, or none.

An async context manager holding several resources (a task group, a client session, a subscription)
enters them on ``self._stack`` and closes that stack when it exits. If entering one of them fails, the
ones already entered are closed before the error propagates, or they leak (an open session, a task
group whose tasks keep running). Every such ``__aenter__`` does it the same way::

    async def __aenter__(self) -> Self:
        async with opening(self._stack) as stack:
            self._session = await stack.enter_async_context(aiohttp.ClientSession())
            self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
        return self

The stack is closed *without* the error, as the object's own exit would close it. Handed the error, an
:class:`asyncio.TaskGroup` would raise it again wrapped in an ``ExceptionGroup``, and a caller's
``except ConfigError`` would miss it: that is why the :mod:`contextlib` documentation's idiom (enter on a
local stack, ``pop_all()`` it at the end) is not used.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

__all__ = ["opening"]


@contextlib.asynccontextmanager
async def opening(stack: contextlib.AsyncExitStack) -> AsyncIterator[contextlib.AsyncExitStack]:
    """Yield ``stack`` to enter resources on; if the block raises, close ``stack`` and re-raise the error as is."""
    try:
        yield stack
    except BaseException:
        await stack.aclose()
        raise
