"""MQTT 5 for every wardwatch service: paho-mqtt driven by the asyncio event loop, no threads.

:func:`build_client` makes a configured paho client (MQTT 5, TLS, username/password, last will,
manual acknowledgement). :class:`MqttClient` runs it on the event loop through paho's socket
callbacks (the approach aiomqtt takes, without its per-message queue hops), reconnects with
backoff forever, resolves one future per QoS 1 publish when the broker's PUBACK arrives, and hands
received messages to an async iterator. With ``manual_ack=True`` a received QoS 1 message is
acknowledged to the broker only when the caller calls :meth:`MqttClient.ack` (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from wardwatch.core.config import MqttSettings
from wardwatch.core.errors import WardwatchError

_log = logging.getLogger(__name__)

MISC_INTERVAL_S: Final = 0.5
READ_CHUNK: Final = 256 * 1024
MAX_PACKETS_PER_WAKEUP: Final = 1024


class ReadBuffer:
    """A socket-like object that serves paho's small ``recv`` calls from one large ``recv``.

    paho reads every packet with two or three ``recv`` calls; measured on the ingest path, one
    256 KiB read per wake-up parsed by paho from memory took the subscriber from 13-22k to 32-34k
    messages/s. It also drains a TLS record completely, so no decrypted bytes wait inside the SSL
    object where the event loop cannot see them.
    """

    __slots__ = ("_buf", "_pos", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes, from the buffer or one large read of the socket."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = self.sock.recv(READ_CHUNK)  # BlockingIOError / SSLWantReadError pass through to paho
            if not buf:
                return b""
            self._buf, pos = buf, 0
        end = pos + size
        self._pos = min(end, len(buf))
        return buf[pos:end]

    @property
    def buffered(self) -> bool:
        """Whether bytes read from the socket are waiting to be parsed."""
        return self._pos < len(self._buf)

    def send(self, data: bytes | bytearray) -> int:
        """Write through to the socket."""
        sent: int = self.sock.send(data)
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def install_read_buffer(client: paho.Client) -> bool:
    """Make ``client`` read through a :class:`ReadBuffer`; False if this paho has no hook for it.

    Hooks paho's private ``_create_socket`` (paho is pinned below 3; its websocket transport wraps
    the socket the same way); without the hook, reads stay unbuffered.
    """
    create_socket = getattr(client, "_create_socket", None)
    if not callable(create_socket):
        return False

    def create_buffered() -> Any:
        return ReadBuffer(create_socket())

    client._create_socket = create_buffered  # type: ignore[method-assign]
    return True


PublishHandler = Callable[[str, bytes, int, int, int], None]
"""``handler(topic, payload, qos, mid, retain)`` for a received PUBLISH."""


def install_fast_publish(client: paho.Client, deliver: PublishHandler) -> bool:
    """Parse received MQTT 5 QoS 0/1 PUBLISH packets here instead of in paho; False if this paho has no hook.

    paho builds an ``MQTTMessage``, a ``Properties`` object (unpacked, then cleared) and matches the
    topic against per-topic callbacks for every message: measured with py-spy in the alerting service
    at 5,000 messages/s, that was 20 % of its CPU. Here the topic, packet id and payload are sliced
    out of the packet and the properties skipped (wardwatch uses none on received messages; topic
    aliases are never sent to a client that does not announce a Topic Alias Maximum). QoS 2, empty
    topics and malformed packets go to paho's own handler. Hooks paho's private ``_handle_publish``
    and ``_in_packet`` (paho is pinned below 3, like :func:`install_read_buffer`).
    """
    original = getattr(client, "_handle_publish", None)
    send_puback = getattr(client, "_send_puback", None)
    if not callable(original) or not callable(send_puback) or not isinstance(getattr(client, "_in_packet", None), dict):
        return False

    def handle_publish() -> MQTTErrorCode:
        command: int = client._in_packet["command"]
        packet: bytes | bytearray = client._in_packet["packet"]
        qos = (command & 0x06) >> 1
        try:
            end = 2 + ((packet[0] << 8) | packet[1])
            topic_bytes = packet[2:end]
            if qos == 2 or len(topic_bytes) != end - 2 or not topic_bytes:
                return original()  # type: ignore[no-any-return]
            mid = 0
            if qos:
                mid = (packet[end] << 8) | packet[end + 1]
                end += 2
            properties, shift = 0, 0
            while True:  # the properties' length (a variable byte integer), then skip them
                byte = packet[end]
                end += 1
                properties |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
            end += properties
            if end > len(packet):
                return original()  # type: ignore[no-any-return]
        except IndexError:
            return original()  # type: ignore[no-any-return]
        try:
            topic = topic_bytes.decode()
        except UnicodeDecodeError:
            topic = "<invalid UTF-8 topic>"
        deliver(topic, bytes(packet[end:]), qos, mid, command & 0x01)
        if qos == 1 and not client._manual_ack:
            return send_puback(mid)  # type: ignore[no-any-return]
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._handle_publish = handle_publish  # type: ignore[method-assign]
    return True


class MqttError(WardwatchError):
    """The broker refused or the connection failed; the message says which and what to check."""


class PublishRefusedError(MqttError):
    """The broker answered a QoS 1 publish with a failure reason code (e.g. ``Not authorized``)."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"broker refused publish to {topic!r}: {reason} (check the broker ACL for this user)")


@dataclass(frozen=True, slots=True)
class Will:
    """Last-will message the broker publishes if this client disappears."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Message:
    """A received message. With manual acknowledgement, pass it to :meth:`MqttClient.ack` once stored."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    generation: int = 0  # which connection delivered it (acknowledgements must match)


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """TLS client context from the settings: the CA to trust and an optional client certificate."""
    try:
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        if settings.cert_file is not None and settings.key_file is not None:
            context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise MqttError(f"cannot load TLS files for MQTT ({exc}); check mqtt.ca_file/cert_file/key_file") from None
    return context


def build_client(
    settings: MqttSettings,
    client_id: str,
    *,
    will: Will | None = None,
    manual_ack: bool = False,
    max_inflight: int = 256,
) -> paho.Client:
    """A paho MQTT 5 client configured from ``settings`` (TLS, credentials, will); not yet connected."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    if settings.tls:
        client.tls_set_context(tls_context(settings))
    if settings.username is not None:
        password = settings.password.reveal() if settings.password is not None else None
        client.username_pw_set(settings.username, password)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    return client


def _connect_properties(session_expiry_s: int, receive_maximum: int | None) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties


MessageCallback = Callable[[Message], None]


def subscribe_options(qos: int = 1, retained: bool = True, retain_as_published: bool = False) -> SubscribeOptions:
    """MQTT 5 subscription options: QoS, and whether retained messages are sent at subscribe time.

    ``retained=False`` is Retain Handling 2 ("do not send retained messages at the time of the subscribe").
    """
    return SubscribeOptions(
        qos=qos,
        retainAsPublished=retain_as_published,
        retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE if retained else SubscribeOptions.RETAIN_DO_NOT_SEND,
    )


class MqttClient:
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
            properties = _connect_properties(self.settings.session_expiry_s, self.receive_maximum)
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

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        future = self._suback.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reasons)
        if mid in self._renewals:
            failed = [str(reason) for reason in reasons if reason.is_failure]
            if failed:
                self.last_connect_error = f"broker refused subscription: {', '.join(failed)} (check the broker ACL)"
                _log.error("MQTT %s", self.last_connect_error)
                return
            self._renewals.discard(mid)
            if not self._renewals:
                self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.qos and self._manual_ack:
            self._unacked += 1
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = "<invalid UTF-8 topic>"
        payload = message.payload
        self._dispatch(
            topic, payload if isinstance(payload, bytes) else bytes(payload), message.qos, message.mid, message.retain
        )

    def _on_publish_packet(self, topic: str, payload: bytes, qos: int, mid: int, retain: int) -> None:
        """A PUBLISH parsed by :func:`install_fast_publish` (what ``_on_message`` does for paho's messages)."""
        if qos and self._manual_ack:
            self._unacked += 1
        self._dispatch(topic, payload, qos, mid, retain)

    def _dispatch(self, topic: str, payload: bytes, qos: int, mid: int, retain: int) -> None:
        """Hand a received message on (subclasses on a hot path may override this)."""
        received = Message(topic, payload, qos, bool(retain), mid, self.generation)
        if self._on_message_callback is not None:
            self._on_message_callback(received)
        else:
            self._messages.put_nowait(received)

    # -- public operations -----------------------------------------------------------------------

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> asyncio.Future[None]:
        """Queue a publish; the future completes at PUBACK (QoS 1) or when written (QoS 0).

        paho keeps unacknowledged messages across reconnects and re-sends them, so the future stays
        pending through an outage. It fails with :class:`PublishRefusedError` if the broker refuses.
        """
        assert self._loop is not None, "use MqttClient as an async context manager"
        future: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            future.set_exception(MqttError(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}"))
        elif qos == 0 or (info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS and info.is_published()):
            future.set_result(None)
        else:
            self._pending[info.mid] = (future, topic)
        return future

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the broker's acknowledgement (QoS 1)."""
        await self.publish_nowait(topic, payload, qos=qos, retain=retain)

    def add_subscription(
        self, topic_filter: str, qos: int = 1, *, retained: bool = True, retain_as_published: bool = False
    ) -> None:
        """Subscribe on every (re)connect from now on, without waiting (see :meth:`wait_subscribed`).

        See :meth:`subscribe` for ``retained`` and ``retain_as_published``.
        """
        self._subscriptions[topic_filter] = subscribe_options(qos, retained, retain_as_published)

    async def subscribe(
        self,
        topic_filter: str,
        *,
        qos: int = 1,
        retained: bool = True,
        retain_as_published: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Subscribe now (waiting for SUBACK if connected) and again after every reconnect.

        ``retained=False`` asks the broker never to send the messages retained on matching topics
        when subscribing (MQTT 5 Retain Handling 2): for streams where only live messages count
        (vitals), so an old retained message cannot act again at every restart. With
        ``retain_as_published`` the broker keeps the retain flag of live messages
        (:attr:`Message.retain`), so a message published with retain can be recognised and refused.
        """
        assert self._loop is not None, "use MqttClient as an async context manager"
        options = subscribe_options(qos, retained, retain_as_published)
        self._subscriptions[topic_filter] = options
        if not self._connected.is_set():
            return
        result, mid = self._client.subscribe(topic_filter, options=options)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return  # disconnected meanwhile: renewed on reconnect
        future: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._suback[mid] = future
        async with asyncio.timeout(timeout):
            reasons = await future
        failed = [str(reason) for reason in reasons if reason.is_failure]
        if failed:
            raise MqttError(f"broker refused subscription to {topic_filter!r}: {', '.join(failed)}")

    def ack(self, message: Message) -> bool:
        """Acknowledge a received message (with ``manual_ack``); False if its connection is gone."""
        if message.qos == 0:
            return True
        return self.ack_many([message.mid], message.generation)

    def ack_many(self, mids: list[int], generation: int) -> bool:
        """Acknowledge QoS 1 packet ids received in connection ``generation``; False if it is gone."""
        if generation != self.generation or not self._connected.is_set():
            return False  # a packet id of an earlier connection may name another message now
        ack = self._client.ack
        for mid in mids:
            ack(mid, 1)
        self._unacked -= len(mids)
        if self._paused and not self._over_limit():
            self._resume()
        return True

    @property
    def unacknowledged(self) -> int:
        """QoS 1 messages of the current connection received and not yet acknowledged."""
        return self._unacked

    async def messages(self) -> AsyncIterator[Message]:
        """Received messages, in arrival order."""
        while True:
            yield await self._messages.get()

    def get_message_nowait(self) -> Message | None:
        """The next received message if one is waiting, else ``None`` (for batching consumers)."""
        try:
            return self._messages.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def get_message(self) -> Message:
        """Wait for the next received message."""
        return await self._messages.get()

    @property
    def pending_publishes(self) -> int:
        """QoS 1 publishes not yet acknowledged by the broker."""
        return len(self._pending)
