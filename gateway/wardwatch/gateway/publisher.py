"""Drain the durable queue to the broker in order, QoS 1, deleting each message at its PUBACK.

At most ``in_flight`` publishes are unacknowledged at once (paho re-sends them after a reconnect,
so an outage simply stalls the window; the rest waits on disk). Refusals by the broker:

* permanent (``Not authorized``, ``Topic Name invalid``, ``Payload format invalid``, ``Packet too
  large``): re-sending cannot help, and the queue must not stall behind one message. The message is
  moved to the queue file's ``dead_letters`` table (kept, never silently dropped), counted and
  logged once a minute; the queue goes on.
* anything else (``Quota exceeded``, ``Server busy``, ...): the message is re-sent after a backoff.

Gap reports (readings dropped because the queue was full) are published as
:class:`~wardwatch.core.schema.DataGap` on the gateway's gap topic, ahead of the backlog.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

from wardwatch.core.logs import RateLimitedLog
from wardwatch.core.mqtt import MqttError, PublishRefusedError
from wardwatch.core.schema import DataGap, encode
from wardwatch.core.topics import gap_topic
from wardwatch.gateway.queue import DurableQueue, Gap, QueuedMessage

__all__ = ["PERMANENT_REFUSALS", "PublishTransport", "Publisher"]

_log = logging.getLogger(__name__)
_refusal_log = RateLimitedLog(_log, 60.0)

PERMANENT_REFUSALS: Final = frozenset(
    {"Not authorized", "Topic Name invalid", "Payload format invalid", "Packet too large", "Topic alias invalid"}
)


class PublishTransport(Protocol):
    """What the publisher needs of :class:`wardwatch.core.mqtt.MqttClient`."""

    @property
    def is_connected(self) -> bool: ...

    async def wait_connected(self, timeout: float | None = None) -> None: ...

    def publish_nowait(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]: ...


class Publisher:
    """Publishes queued messages over an MQTT client; run :meth:`run` in a task."""

    def __init__(
        self,
        queue: DurableQueue,
        mqtt: PublishTransport,
        *,
        gateway: str,
        ward: str,
        in_flight: int = 256,
        retry_min_s: float = 1.0,
        retry_max_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.mqtt = mqtt
        self.gateway = gateway
        self.ward = ward
        self.window = in_flight
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._gap_topic = gap_topic(ward, gateway)
        self._in_flight = 0
        self._room = asyncio.Event()
        self._room.set()
        self._retry: collections.deque[tuple[float, QueuedMessage, int]] = collections.deque()
        self._retry_ready = asyncio.Event()
        self.published = 0
        self.acked = 0
        self.dead_lettered = 0
        self.retried = 0
        self.gaps_published = 0

    @property
    def in_flight(self) -> int:
        """Publishes awaiting their PUBACK."""
        return self._in_flight

    async def run(self) -> None:
        """Publish forever (cancel to stop; unacknowledged messages stay queued on disk)."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._messages(), name="publisher-messages")
            tasks.create_task(self._gaps(), name="publisher-gaps")

    # -- messages --------------------------------------------------------------------------------

    async def _wait_for_room(self) -> None:
        while self._in_flight >= self.window:
            self._room.clear()
            await self._room.wait()

    async def _messages(self) -> None:
        cursor = 0
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_room()
            if not self.mqtt.is_connected:
                # Publishing while disconnected would only pile messages into paho's memory (and
                # MqttClient.publish_nowait raises then, see the report); they wait on disk instead.
                await self.mqtt.wait_connected(None)
            while self._retry and self._retry[0][0] <= loop.time() and self._in_flight < self.window:
                _, message, attempt = self._retry.popleft()
                self._send(message, attempt)
            room = self.window - self._in_flight
            if room <= 0:
                continue
            batch = await self.queue.read_after(cursor, room)
            if batch:
                for message in batch:
                    self._send(message, 0)
                cursor = batch[-1].id
                continue
            await self._wait_for_work(cursor)

    async def _wait_for_work(self, cursor: int) -> None:
        """Wait for new messages or the next retry, whichever comes first."""
        loop = asyncio.get_running_loop()
        timeout = max(0.0, self._retry[0][0] - loop.time()) if self._retry else None
        self._retry_ready.clear()
        waiters = [
            asyncio.ensure_future(self.queue.wait_beyond(cursor)),
            asyncio.ensure_future(self._retry_ready.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _send(self, message: QueuedMessage, attempt: int) -> None:
        future = self.mqtt.publish_nowait(message.topic, message.payload, qos=1)
        self._in_flight += 1
        self.published += 1
        future.add_done_callback(lambda f: self._done(message, attempt, f))

    def _done(self, message: QueuedMessage, attempt: int, future: asyncio.Future[None]) -> None:
        self._in_flight -= 1
        self._room.set()
        if future.cancelled():
            return  # shutting down: the message stays on disk and is sent after the restart
        exc = future.exception()
        if exc is None:
            self.queue.ack(message.id)
            self.acked += 1
            return
        if isinstance(exc, PublishRefusedError) and exc.reason in PERMANENT_REFUSALS:
            self.queue.dead_letter(message.id, f"{exc.reason}: {exc.topic}")
            self.dead_lettered += 1
            _refusal_log.warning(
                f"refused:{exc.reason}",
                "broker refused message %d on %s (%s): kept in the dead-letter table of the queue; "
                "check the broker ACL for this gateway",
                message.id,
                message.topic,
                exc.reason,
            )
            return
        if not isinstance(exc, MqttError):
            _log.error("publishing message %d failed unexpectedly: %r; will retry", message.id, exc)
        delay = min(self._retry_max_s, self._retry_min_s * 2**attempt)
        _refusal_log.warning(
            f"retry:{type(exc).__name__}",
            "publish of message %d failed (%s); retrying in %.1f s",
            message.id,
            exc,
            delay,
        )
        self.retried += 1
        self._retry.append((asyncio.get_running_loop().time() + delay, message, attempt + 1))
        self._retry_ready.set()

    # -- gap reports -----------------------------------------------------------------------------

    async def _gaps(self) -> None:
        while True:
            await self.queue.wait_gaps()
            if not self.mqtt.is_connected:
                await self.mqtt.wait_connected(None)
            for gap in await self.queue.take_gaps():
                self._send_gap(gap)

    def _gap_message(self, gap: Gap) -> DataGap:
        return DataGap(
            gateway=self.gateway,
            t=gap.t,
            dropped=gap.dropped,
            first_t=gap.first_t,
            last_t=gap.last_t,
            patient=gap.patient,
            device=gap.device,
        )

    def _send_gap(self, gap: Gap) -> None:
        future = self.mqtt.publish_nowait(self._gap_topic, encode(self._gap_message(gap)), qos=1)

        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is None:
                self.queue.ack_gap(gap.id)
                self.gaps_published += 1
                return
            _refusal_log.warning("gap", "gap report %d not delivered (%s); retrying in %.0f s", gap.id, exc, 5.0)
            asyncio.get_running_loop().call_later(5.0, self.queue.release_gap, gap.id)

        future.add_done_callback(done)
