"""An MQTT 5 session's settings: the paho client (TLS, credentials, last will), errors and message types."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wardwatch.core.config import MqttSettings
from wardwatch.core.errors import WardwatchError


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


def connect_properties(session_expiry_s: int, receive_maximum: int | None) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties
