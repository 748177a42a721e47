"""A high-rate MQTT 5 subscriber with manual acknowledgement, driven by the asyncio loop.

It drives the paho client of :func:`wardwatch.core.mqtt.build_client` like
:class:`wardwatch.core.mqtt.MqttClient` does (socket callbacks, no threads), but is shaped for a
consumer of tens of thousands of messages per second (measured on this project's 2-core machines,
see ``docs/ingest.md``):

* Messages go straight to a synchronous handler (no per-message queue hop or dataclass).
* A readable socket is drained of every complete packet at once, not one packet per loop wake-up.
* paho reads a packet in three ``recv`` calls (1 byte, length, body); a read buffer in front of
  the socket turns these into one ``recv`` per 256 KiB (paho's socket-like wrapper hook, the way
  its websocket transport works). If a future paho lacks the hook, the subscriber runs unbuffered.
* At most ``receive_maximum`` messages are held unacknowledged: the bound on memory, and the
  backpressure when the database is slow (nothing is acknowledged until stored). The MQTT 5 *Receive
  Maximum* asks the broker to stop there, and when it does not (mosquitto 2.0.11 honours it until the
  first acknowledgement, then sends its whole queue), the subscriber stops reading the socket once it
  holds more, until acknowledgements bring it back to the limit, so TCP holds the broker back. (Such a
  pause, longer than about twice the keepalive, makes paho reconnect; the broker redelivers.)
* Every successful connection gets a new :attr:`generation`. Acknowledging a packet id of an
  earlier connection could acknowledge a *different* message the broker sent since with the same
  id, so :meth:`ack` ignores stale generations; those messages are redelivered instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import (
    MqttError,
    PublishRefusedError,
    ReadBuffer,
    build_client,
    install_read_buffer,
)

__all__ = ["MessageHandler", "Subscriber"]

_log = logging.getLogger(__name__)

#: ``handler(topic, payload, mid, qos, generation)``; runs on the loop thread, must not block.
MessageHandler = Callable[[str, bytes, int, int, int], None]

MAX_PACKETS_PER_WAKEUP: Final = 4096
MISC_INTERVAL_S: Final = 0.5


def _connect_properties(session_expiry_s: int, receive_maximum: int) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session_expiry_s
    properties.ReceiveMaximum = receive_maximum
    return properties


class Subscriber:
    """A persistent-session MQTT 5 subscription delivering to ``handler``; an async context manager.

    Entering starts connection attempts (with backoff, forever) and returns at once.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        topic_filters: list[str],
        handler: MessageHandler,
        *,
        receive_maximum: int = 20_000,
        buffered: bool = True,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 10.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not 1 <= receive_maximum <= 65_535:
            raise MqttError(f"receive_maximum {receive_maximum} is outside MQTT 5's 1..65535")
        self.settings = settings
        self.client_id = client_id
        self.topic_filters = list(topic_filters)
        self._handler = handler
        self.receive_maximum = receive_maximum
        self._backoff = (backoff_min_s, backoff_max_s)
        self._connect_timeout_s = connect_timeout_s
        client = build_client(settings, client_id, manual_ack=True, max_inflight=1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._client = client
        self._current_buffer: Callable[[], ReadBuffer | None] = lambda: None
        self.buffered = buffered and callable(getattr(client, "_create_socket", None))
        if self.buffered:
            self._current_buffer = install_read_buffer(client)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader_fd: int | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._subscribed = asyncio.Event()
        self._pending: dict[int, tuple[asyncio.Future[None], str]] = {}
        self._suback_mids: set[int] = set()
        self._stack = contextlib.AsyncExitStack()
        self._closing = False
        self._continue_scheduled = False
        self._unacked = 0
        self._received = 0
        self._paused = False
        self.pauses = 0
        self.generation = 0
        self.session_present = False
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._tasks = [
            tasks.create_task(self._supervise(), name=f"mqtt-supervise-{self.client_id}"),
            tasks.create_task(self._misc(), name=f"mqtt-misc-{self.client_id}"),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        if self._connected.is_set():
            self._client.disconnect()
            self._flush_writes()
        for future, _ in self._pending.values():
            future.cancel()
        for task in self._tasks:
            task.cancel()
        await self._stack.aclose()
        self._remove_fds()

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it is up."""
        return self._connected.is_set()

    async def wait_subscribed(self, timeout: float) -> None:
        """Wait until connected and every filter's SUBACK arrived; raise :class:`MqttError` on timeout."""
        try:
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancellation
                await self._subscribed.wait()
        except TimeoutError:
            raise MqttError(
                f"not subscribed on {self.settings.host}:{self.settings.port} after {timeout} s"
                f" (last error: {self.last_error or 'none'})"
            ) from None

    async def wait_disconnected(self) -> None:
        """Return when the current connection is down."""
        await self._disconnected.wait()

    async def _supervise(self) -> None:
        delay = self._backoff[0]
        first = True
        while True:
            await self._disconnected.wait()
            if not first:
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._backoff[1])
            try:
                await self._connect_once(first)
            except (OSError, MqttError, ssl.SSLError) as exc:
                self.last_error = str(exc)
                _log.warning("MQTT connect to %s:%s failed: %s", self.settings.host, self.settings.port, exc)
                self._remove_fds()
                continue
            finally:
                first = False
            delay = self._backoff[0]

    async def _connect_once(self, first: bool) -> None:
        assert self._loop is not None
        self._disconnected.clear()
        client = self._client
        if first:
            properties = _connect_properties(self.settings.session_expiry_s, self.receive_maximum)
            result = await self._loop.run_in_executor(
                None,
                lambda: client.connect(
                    self.settings.host,
                    self.settings.port,
                    keepalive=self.settings.keepalive_s,
                    clean_start=False,
                    properties=properties,
                ),
            )
        else:
            result = await self._loop.run_in_executor(None, client.reconnect)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttError(paho.error_string(result))
        up = asyncio.ensure_future(self._connected.wait())
        down = asyncio.ensure_future(self._disconnected.wait())
        try:
            await asyncio.wait([up, down], timeout=self._connect_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            down.cancel()
        if not self._connected.is_set():
            self._disconnected.set()
            raise MqttError(self.last_error or f"no CONNACK within {self._connect_timeout_s} s")

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            if self._client.socket() is not None:
                self._client.loop_misc()

    # -- socket plumbing ---------------------------------------------------------------------------

    def _in_loop(self, fn: Callable[[], None]) -> None:
        assert self._loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._in_loop(lambda: self._add_reader(fd))

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self._in_loop(self._remove_fds)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._in_loop(lambda: self._add_writer(fd))

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._in_loop(lambda: self._remove_writer(fd))

    def _add_reader(self, fd: int) -> None:
        if self._loop is not None and fd >= 0:
            self._reader_fd = fd
            self._paused = False
            self._loop.add_reader(fd, self._on_readable)

    def _pause(self) -> None:
        """Stop reading: more than ``receive_maximum`` messages are unacknowledged (the broker ignored it)."""
        if not self._paused and self._loop is not None and self._reader_fd is not None:
            self._paused = True
            self.pauses += 1
            self._loop.remove_reader(self._reader_fd)

    def _resume(self) -> None:
        if self._paused and self._loop is not None and self._reader_fd is not None:
            self._paused = False
            self._loop.add_reader(self._reader_fd, self._on_readable)
            if not self._continue_scheduled:  # bytes may wait in the read buffer
                self._continue_scheduled = True
                self._loop.call_soon(self._on_readable)

    def _add_writer(self, fd: int) -> None:
        if self._loop is not None and fd >= 0 and self._client.socket() is not None:
            self._loop.add_writer(fd, self._client.loop_write)

    def _remove_writer(self, fd: int) -> None:
        if self._loop is not None and fd >= 0:
            self._loop.remove_writer(fd)

    def _remove_fds(self) -> None:
        fd, self._reader_fd = self._reader_fd, None
        if self._loop is not None and fd is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)

    def _flush_writes(self) -> None:
        if self._client.socket() is not None:
            self._client.loop_write()

    def _on_readable(self) -> None:
        """Parse every complete packet the socket (and the read buffer) holds, then yield."""
        self._continue_scheduled = False
        if self._paused or self._reader_fd is None:
            return
        client = self._client
        limit = self.receive_maximum
        if self.buffered:
            buffer = self._current_buffer()
            for _ in range(MAX_PACKETS_PER_WAKEUP):
                if self._unacked > limit:
                    self._pause()
                    return
                if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or buffer is None:
                    return
                if not buffer.buffered or client.socket() is not buffer:
                    return
            # Fair to other tasks: continue after them (the socket may not signal readable again).
            if self._loop is not None and not self._continue_scheduled:
                self._continue_scheduled = True
                self._loop.call_soon(self._on_readable)
        else:
            for _ in range(MAX_PACKETS_PER_WAKEUP):
                if self._unacked > limit:
                    self._pause()
                    return
                before = self._received
                if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or self._received == before:
                    return

    # -- paho callbacks (loop thread) -----------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused connection: {reason} (check username/password and TLS)"
            _log.error("MQTT %s", self.last_error)
            return
        self.generation += 1
        self._unacked = 0  # the broker redelivers whatever the last connection left unacknowledged
        self.session_present = bool(getattr(flags, "session_present", False))
        self.last_error = None
        _log.info(
            "MQTT connected to %s:%s (session present: %s, generation %d)",
            self.settings.host,
            self.settings.port,
            self.session_present,
            self.generation,
        )
        self._suback_mids.clear()
        for topic_filter in self.topic_filters:
            result, mid = client.subscribe(topic_filter, qos=1)
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._suback_mids.add(mid)
        self._connected.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if self._connected.is_set() and not self._closing:
            _log.warning("MQTT disconnected from %s:%s: %s", self.settings.host, self.settings.port, reason)
        self._connected.clear()
        self._subscribed.clear()
        self._remove_fds()
        if not self._closing:
            self._disconnected.set()

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        failed = [str(reason) for reason in reasons if reason.is_failure]
        if failed:
            self.last_error = f"broker refused subscription: {', '.join(failed)} (check the broker ACL)"
            _log.error("MQTT %s", self.last_error)
            return
        self._suback_mids.discard(mid)
        if not self._suback_mids:
            self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._received += 1
        if message.qos:
            self._unacked += 1
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = "<invalid UTF-8 topic>"
        payload = message.payload
        self._handler(
            topic, payload if isinstance(payload, bytes) else bytes(payload), message.mid, message.qos, self.generation
        )

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None or entry[0].done():
            return
        future, topic = entry
        if reason.is_failure:
            future.set_exception(PublishRefusedError(topic, str(reason)))
        else:
            future.set_result(None)

    # -- operations ------------------------------------------------------------------------------

    def ack(self, mids: list[int], generation: int) -> bool:
        """Acknowledge QoS 1 messages received in connection ``generation``; False if it is gone."""
        if generation != self.generation or not self._connected.is_set():
            return False
        ack = self._client.ack
        for mid in mids:
            ack(mid, 1)
        self._unacked -= len(mids)
        if self._paused and self._unacked <= self.receive_maximum:
            self._resume()
        return True

    @property
    def unacknowledged(self) -> int:
        """QoS 1 messages of the current connection received and not yet acknowledged."""
        return self._unacked

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> asyncio.Future[None]:
        """Publish; the future completes at the broker's PUBACK (paho re-sends across reconnects)."""
        assert self._loop is not None, "use Subscriber as an async context manager"
        future: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            future.set_exception(MqttError(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}"))
        elif qos == 0 or info.is_published():
            future.set_result(None)
        else:
            self._pending[info.mid] = (future, topic)
        return future
