"""Subscriptions and received messages of :class:`wardwatch.core.mqtt.MqttClient`: subscribe (renewed on
every reconnect), hand messages on (queue or callback) and acknowledge them (``manual_ack``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from wardwatch.core.mqtt.session import Message, MqttError

_log = logging.getLogger("wardwatch.core.mqtt")


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


class Subscriptions:
    """The subscribing and receiving half of :class:`~wardwatch.core.mqtt.MqttClient` (which holds the state)."""

    _client: paho.Client
    _loop: asyncio.AbstractEventLoop | None
    _connected: asyncio.Event
    _subscribed: asyncio.Event
    _subscriptions: dict[str, SubscribeOptions]
    _suback: dict[int, asyncio.Future[list[ReasonCode]]]
    _renewals: set[int]
    _messages: asyncio.Queue[Message]
    _manual_ack: bool
    _unacked: int
    _paused: bool
    _on_message_callback: MessageCallback | None
    generation: int
    last_connect_error: str | None

    def _over_limit(self) -> bool:
        raise NotImplementedError  # MqttClient's (flow control: receive_maximum)

    def _resume(self) -> None:
        raise NotImplementedError  # MqttClient's (flow control: receive_maximum)

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
