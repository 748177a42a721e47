"""``opening``: an object's resources are entered on its stack all together, or closed again on a failure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from wardwatch.core.errors import ConfigError
from wardwatch.core.lifecycle import opening


class _Resource:
    """Records how it was closed."""

    def __init__(self) -> None:
        self.exited_with: list[type[BaseException] | None] = []

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[_Resource]:
        try:
            yield self
        except BaseException as exc:
            self.exited_with.append(type(exc))
            raise
        else:
            self.exited_with.append(None)


async def test_a_failure_closes_what_was_entered_and_raises_the_error_itself() -> None:
    resource = _Resource()

    async def open_then_fail() -> None:
        async with opening(contextlib.AsyncExitStack()) as entering:
            await entering.enter_async_context(resource.open())
            tasks = await entering.enter_async_context(asyncio.TaskGroup())
            tasks.create_task(asyncio.sleep(0))
            raise ConfigError("bad channel")

    with pytest.raises(ConfigError, match="bad channel"):  # not an ExceptionGroup from the task group
        await open_then_fail()
    assert resource.exited_with == [None]  # closed as the object's own exit would close it


async def test_a_cancellation_while_opening_closes_what_was_entered() -> None:
    resource = _Resource()
    entered = asyncio.Event()

    async def open_slowly() -> None:
        async with opening(contextlib.AsyncExitStack()) as entering:
            await entering.enter_async_context(resource.open())
            entered.set()
            await asyncio.Event().wait()  # e.g. waiting for a broker

    task = asyncio.create_task(open_slowly())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert resource.exited_with == [None]


async def test_everything_stays_open_after_a_successful_open() -> None:
    resource = _Resource()
    stack = contextlib.AsyncExitStack()
    async with opening(stack) as entering:
        await entering.enter_async_context(resource.open())
    assert resource.exited_with == []
    await stack.aclose()
    assert resource.exited_with == [None]
