"""The MQTT 5 connection on the event loop: lifecycle, reconnects with backoff, socket plumbing, CONNACK."""

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
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt.fastpath import ReadBuffer, install_fast_publish, install_read_buffer
from wardwatch.core.mqtt.publishing import Publishing
from wardwatch.core.mqtt.session import Message, MqttError, Will, build_client, connect_properties
from wardwatch.core.mqtt.subscriptions import MessageCallback, Subscriptions

_log = logging.getLogger("wardwatch.core.mqtt")

MISC_INTERVAL_S: Final = 0.5
MAX_PACKETS_PER_WAKEUP: Final = 1024


class MqttClient(Subscriptions, Publishing):
    """An MQTT 5 connection on the asyncio loop that stays connected (reconnects with backoff).

    Use as ``async with MqttClient(settings, client_id) as mqtt:``. Entering starts the connection
    attempts and returns at once; :meth:`wait_connected` waits for the broker. Subscriptions are
    renewed after every reconnect.

    Received messages go to an async queue (:meth:`messages`, :meth:`get_message`), or straight to
    ``on_message`` when given (no queue hop: the high-rate path of ingest). With ``manual_ack`` a
    QoS 1 message is acknowledged only by :meth:`ack`; every connection has a new :attr:`generation`,
    and acknowledgements of an earlier connection are ignored (the packet id may since name a
    different message; the broker redelivers the old one instead). ``receive_maximum`` bounds the
    unacknowledged messages: it is sent to the broker (MQTT 5 Receive Maximum) and, because
    mosquitto 2.0.11 honours it only until the first acknowledgement, the client also stops reading
    the socket while it holds more, so TCP holds the broker back.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        clean_start: bool = False,
        will: Will | None = None,
        manual_ack: bool = False,
        receive_maximum: int | None = None,
        on_message: MessageCallback | None = None,
        max_inflight: int = 256,
        message_queue_size: int = 0,
        on_connect: Callable[[], None] | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        buffered: bool = True,
    ) -> None:
        if receive_maximum is not None and not 1 <= receive_maximum <= 65_535:
            raise MqttError(f"receive_maximum {receive_maximum} is outside MQTT 5's 1..65535")
        self.settings = settings
        self.client_id = client_id
        self._clean_start = clean_start
        self._manual_ack = manual_ack
        self.receive_maximum = receive_maximum
        self._client = build_client(settings, client_id, will=will, manual_ack=manual_ack, max_inflight=max_inflight)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write
        self.buffered = buffered and install_read_buffer(self._client)
        self.fast_publish = install_fast_publish(self._client, self._on_publish_packet)
        self._on_message_callback = on_message
        self._on_connect_hook = on_connect
        self._backoff = (backoff_min_s, backoff_max_s)
        self._connect_timeout_s = connect_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader_fd: int | None = None
        self._drain_scheduled = False
        self._paused = False
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._subscribed = asyncio.Event()
        self._pending: dict[int, tuple[asyncio.Future[None], str]] = {}
        self._subscriptions: dict[str, SubscribeOptions] = {}
        self._suback: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._renewals: set[int] = set()
        self._messages: asyncio.Queue[Message] = asyncio.Queue(message_queue_size)
        self._background: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._closing = False
        self._unacked = 0
        self.pauses = 0
        self.generation = 0
        self.session_present = False
        self.last_connect_error: str | None = None
        self.connects = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._background = [
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
            if self._client.socket() is not None:
                self._client.loop_write()  # the DISCONNECT goes out before the socket closes
        for future, _ in self._pending.values():
            future.cancel()
        for task in self._background:
            task.cancel()
        await self._stack.aclose()
        self._remove_fds()

    @property
    def is_connected(self) -> bool:
        """Whether the broker has accepted the connection (CONNACK success) and it is still up."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected; raise :class:`MqttError` with the last failure after ``timeout``."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise MqttError(
                f"not connected to MQTT broker {self.settings.host}:{self.settings.port} after {timeout} s"
                f" (last error: {self.last_connect_error or 'none'})"
            ) from None

    async def wait_subscribed(self, timeout: float | None = None) -> None:
        """Wait until connected and the broker granted every subscription of this connection."""
        try:
            async with asyncio.timeout(timeout):
                await self._subscribed.wait()
        except TimeoutError:
            raise MqttError(
                f"not subscribed on {self.settings.host}:{self.settings.port} after {timeout} s"
                f" (last error: {self.last_connect_error or 'none'})"
            ) from None

    async def wait_disconnected(self) -> None:
        """Wait until the connection is down."""
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
                self._disconnected.set()  # the attempt failed: the next round tries again
                self.last_connect_error = str(exc)
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
            properties = connect_properties(self.settings.session_expiry_s, self.receive_maximum)
            result = await self._loop.run_in_executor(
                None,
                lambda: client.connect(
                    self.settings.host,
                    self.settings.port,
                    keepalive=self.settings.keepalive_s,
                    clean_start=self._clean_start,
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
            raise MqttError(self.last_connect_error or f"no CONNACK within {self._connect_timeout_s} s")

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            if self._client.socket() is not None:
                self._client.loop_misc()

    # -- socket plumbing: paho reads and writes when the loop says the socket is ready ---------------

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
        if sock.fileno() >= 0:
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

    def _over_limit(self) -> bool:
        return self.receive_maximum is not None and self._unacked > self.receive_maximum

    def _pause(self) -> None:
        """Stop reading: more than ``receive_maximum`` messages are unacknowledged."""
        if not self._paused and self._loop is not None and self._reader_fd is not None:
            self._paused = True
            self.pauses += 1
            self._loop.remove_reader(self._reader_fd)

    def _resume(self) -> None:
        if self._paused and self._loop is not None and self._reader_fd is not None:
            self._paused = False
            self._loop.add_reader(self._reader_fd, self._on_readable)
            self._schedule_drain()  # bytes may wait in the read buffer

    def _schedule_drain(self) -> None:
        if self._loop is not None and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        """Parse every packet already read (the buffer, or a TLS record), then let other tasks run."""
        self._drain_scheduled = False
        if self._paused or self._reader_fd is None:
            return
        client = self._client
        for _ in range(MAX_PACKETS_PER_WAKEUP):
            if self._over_limit():
                self._pause()
                return
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            sock = client.socket()
            if isinstance(sock, ReadBuffer):
                if not sock.buffered:
                    return
            elif not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return
        # more is waiting in memory, where the socket will not signal it: continue after other tasks
        self._schedule_drain()

    # -- paho callbacks (run on the loop thread) ----------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if reason.is_failure:
            self.last_connect_error = f"broker refused connection: {reason} (check username/password and TLS)"
            _log.error("MQTT %s", self.last_connect_error)
            return
        self.connects += 1
        self.generation += 1
        self._unacked = 0  # the broker redelivers whatever the last connection left unacknowledged
        self.last_connect_error = None
        self.session_present = bool(getattr(flags, "session_present", False))
        _log.info(
            "MQTT connected to %s:%s (session present: %s, generation %d)",
            self.settings.host,
            self.settings.port,
            self.session_present,
            self.generation,
        )
        self._renewals.clear()
        for topic_filter, options in self._subscriptions.items():
            result, mid = client.subscribe(topic_filter, options=options)
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._renewals.add(mid)
        if not self._renewals:
            self._subscribed.set()
        self._connected.set()
        if self._on_connect_hook is not None:
            self._on_connect_hook()

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
