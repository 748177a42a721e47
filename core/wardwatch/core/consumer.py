"""What an ack-after-store MQTT consumer (ingest, fhir) does around its own store: the shared half of its loop.

A consumer receives on a persistent session (:class:`~wardwatch.core.subscriber.Subscriber`), stores,
and acknowledges a message only once its data is stored or dead-lettered. :class:`AckAfterStore` holds
the steps that do not depend on the store:

* :meth:`~AckAfterStore.retrying`: run a store request until the store is available again, with
  exponential backoff and jitter (nothing is acknowledged meanwhile: the broker holds the rest);
* :meth:`~AckAfterStore.dead_letter` and :meth:`~AckAfterStore.confirm`: publish a
  :class:`~wardwatch.core.schema.DeadLetter` on ``wardwatch/v1/deadletter/{service}`` and wait for the
  broker to have it before the message it replaces is acknowledged;
* :meth:`~AckAfterStore.acknowledge`: acknowledge on the connection the messages came on (an earlier
  connection's packet ids are skipped and counted: the broker redelivers those messages);
* :meth:`~AckAfterStore.start` and :meth:`~AckAfterStore.stop`: the subscription and the consumer's
  loops (its writer, ...) in one task group, with the ``mqtt_connected`` gauge kept current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, Final, TypeVar

from wardwatch.core.lifecycle import opening
from wardwatch.core.logs import RateLimitedLog
from wardwatch.core.metrics import ConsumerMetrics
from wardwatch.core.schema import DeadLetter, encode
from wardwatch.core.subscriber import Subscriber
from wardwatch.core.topics import deadletter_topic

__all__ = ["MAX_DEAD_LETTER_PAYLOAD", "AckAfterStore"]

T = TypeVar("T")

MAX_DEAD_LETTER_PAYLOAD: Final = 64 * 1024


class AckAfterStore:
    """The store-independent steps of ``service``'s consumer on ``subscriber``, counted in ``metrics``."""

    def __init__(self, service: str, subscriber: Subscriber, metrics: ConsumerMetrics, log: logging.Logger) -> None:
        self.service = service
        self.subscriber = subscriber
        self.metrics = metrics
        self.deadletter_topic = deadletter_topic(service)
        self._log = log
        self._warn = RateLimitedLog(log, interval_s=30.0)
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, loops: Mapping[str, Callable[[], Coroutine[Any, Any, None]]]) -> None:
        """Start the task group, the subscription (connecting in the background) and ``loops`` (name: loop)."""
        async with opening(self._stack) as stack:
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            await stack.enter_async_context(self.subscriber)
            self._tasks = [tasks.create_task(loop(), name=name) for name, loop in loops.items()]
            self._tasks.append(tasks.create_task(self.watch_connection(), name=f"{self.service}-connection"))

    async def stop(self) -> None:
        """Cancel the loops and close the subscription (unacknowledged messages stay with the broker)."""
        for task in self._tasks:
            task.cancel()
        await self._stack.aclose()

    async def retrying(
        self,
        operation: Callable[[], Awaitable[T]],
        unavailable: type[Exception],
        *,
        what: str,
        min_s: float,
        max_s: float,
        on_unavailable: Callable[[Exception], Awaitable[None]] | None = None,
    ) -> T:
        """Run ``operation`` until it does not raise ``unavailable``, backing off from ``min_s`` to ``max_s``."""
        delay = min_s
        while True:
            try:
                result = await operation()
            except unavailable as exc:
                self.metrics.up.set(0)
                self.metrics.retries.inc()
                self._warn.warning(self.service, "cannot %s, retrying in %.1f s: %s", what, delay, exc)
                if on_unavailable is not None:
                    await on_unavailable(exc)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, max_s)
                continue
            self.metrics.up.set(1)
            return result

    def dead_letter(self, cause: str, reason: str, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Publish a dead letter (``payload`` cut to 64 KiB); the future completes when the broker has it."""
        letter = DeadLetter(
            service=self.service,
            t=time.time_ns() // 1_000_000,
            reason=reason,
            topic=topic,
            payload=payload[:MAX_DEAD_LETTER_PAYLOAD],
        )
        self.metrics.dead_lettered.labels(cause).inc()
        self._warn.warning(f"dead-letter:{cause}", "dead-lettered a %s message on %s: %s", cause, topic, reason[:500])
        return self.subscriber.publish_nowait(self.deadletter_topic, encode(letter))

    async def confirm(self, letters: Iterable[asyncio.Future[None]], generation: int) -> None:
        """Wait for the broker to confirm ``letters`` while connection ``generation`` lasts (then give up on them:
        the messages they replace are not acknowledged either, and come again)."""
        pending = set(letters)
        while pending and generation == self.subscriber.generation:
            done, pending = await asyncio.wait(pending, timeout=1.0)
            for future in done:
                if future.exception() is not None:
                    self._log.error("dead letter not accepted by the broker: %s", future.exception())
        for future in pending:
            future.cancel()

    def acknowledge(self, mids: list[int], generation: int, messages: int) -> bool:
        """Acknowledge packet ids ``mids`` of connection ``generation``, standing for ``messages`` messages
        (QoS 0 ones have no id); False, counted, when that connection is gone."""
        if self.subscriber.ack_many(mids, generation):
            self.metrics.acked.inc(messages)
            return True
        self.metrics.skipped_acks.inc(messages)
        return False

    async def watch_connection(self) -> None:
        """Keep the ``mqtt_connected`` gauge current (runs until cancelled)."""
        while True:
            self.metrics.mqtt_connected.set(1 if self.subscriber.is_connected else 0)
            await asyncio.sleep(1.0)
