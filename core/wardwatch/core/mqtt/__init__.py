"""MQTT 5 for every wardwatch service: paho-mqtt driven by the asyncio event loop, no threads.

:func:`build_client` makes a configured paho client (MQTT 5, TLS, username/password, last will,
manual acknowledgement). :class:`MqttClient` runs it on the event loop through paho's socket
callbacks (the approach aiomqtt takes, without its per-message queue hops), reconnects with
backoff forever, resolves one future per QoS 1 publish when the broker's PUBACK arrives, and hands
received messages to an async iterator. With ``manual_ack=True`` a received QoS 1 message is
acknowledged to the broker only when the caller calls :meth:`MqttClient.ack` (at-least-once).

The client is split by responsibility: :mod:`.session` (the paho client, TLS, errors, message
types), :mod:`.client` (the connection: lifecycle, reconnects, socket plumbing), :mod:`.subscriptions`
(subscribe, receive, acknowledge), :mod:`.publishing` (publish, PUBACK futures) and :mod:`.fastpath`
(buffered reads, PUBLISH parsing). Import everything from here.
"""

from __future__ import annotations

from wardwatch.core.mqtt.client import MAX_PACKETS_PER_WAKEUP, MISC_INTERVAL_S, MqttClient
from wardwatch.core.mqtt.fastpath import (
    READ_CHUNK,
    PublishHandler,
    ReadBuffer,
    install_fast_publish,
    install_read_buffer,
)
from wardwatch.core.mqtt.session import Message, MqttError, PublishRefusedError, Will, build_client, tls_context
from wardwatch.core.mqtt.subscriptions import MessageCallback, subscribe_options

__all__ = [
    "MAX_PACKETS_PER_WAKEUP",
    "MISC_INTERVAL_S",
    "READ_CHUNK",
    "Message",
    "MessageCallback",
    "MqttClient",
    "MqttError",
    "PublishHandler",
    "PublishRefusedError",
    "ReadBuffer",
    "Will",
    "build_client",
    "install_fast_publish",
    "install_read_buffer",
    "subscribe_options",
    "tls_context",
]
