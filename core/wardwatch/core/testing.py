"""Test helpers shared by the consumers' tests (ingest, fhir): publish a stream, record dead letters.

Blocking paho clients with their own network threads, so that a test's event loop stays free for the
service under test (call :func:`publish_all` through ``asyncio.to_thread``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from wardwatch.core.config import MqttSettings, Secret
from wardwatch.core.schema import DeadLetter, decode
from wardwatch.core.servers import Mosquitto
from wardwatch.core.topics import deadletter_topic
from wardwatch.core.waiting import wait_for

__all__ = ["DeadLetters", "mqtt_settings", "publish_all", "wait_exactly"]

SUBSCRIBE_TIMEOUT_S: Final = 30.0
_CHUNK: Final = 10_000  # paho refuses to queue much more at once


async def wait_exactly(
    count: Callable[[], Awaitable[int]], expected: int, timeout: float, what: str, *, interval: float = 0.05
) -> None:
    """Wait until ``count()`` is ``expected``; fail at once if it ever exceeds it (something was stored twice)."""
    seen = 0

    async def reached() -> bool:
        nonlocal seen
        seen = await count()
        assert seen <= expected, f"{seen} {what} stored, more than the {expected} published"
        return seen == expected

    try:
        await wait_for(reached, timeout, interval=interval, max_interval=10 * interval, what=f"{expected} {what}")
    except TimeoutError:
        raise AssertionError(f"only {seen} of {expected} {what} stored after {timeout} s") from None


def mqtt_settings(broker: Mosquitto, client_id: str, user: str | None = None) -> MqttSettings:
    """How a service under test reaches ``broker`` as ``user`` (TLS and credentials if the broker has them)."""
    endpoint = broker.endpoint(user)
    return MqttSettings(
        host=endpoint.host,
        port=endpoint.port,
        tls=endpoint.tls,
        ca_file=endpoint.ca_file,
        username=endpoint.username,
        password=Secret(endpoint.password) if endpoint.password is not None else None,
        client_id=client_id,
    )


def publish_all(
    broker: Mosquitto,
    messages: list[tuple[str, bytes]],
    *,
    client_id: str = "test-publisher",
    user: str | None = None,
    retain: bool = False,
) -> None:
    """Publish with QoS 1 as ``user`` (TLS if the broker has it); return when every PUBACK came (blocking)."""
    endpoint = broker.endpoint(user)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    if endpoint.ca_file is not None:
        client.tls_set(ca_certs=str(endpoint.ca_file))
    if endpoint.username is not None:
        client.username_pw_set(endpoint.username, endpoint.password)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    try:
        for chunk in range(0, len(messages), _CHUNK):
            chunk_messages = messages[chunk : chunk + _CHUNK]
            infos = [client.publish(topic, payload, qos=1, retain=retain) for topic, payload in chunk_messages]
            deadline = time.monotonic() + 120
            for info in infos:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                if not info.is_published():
                    raise TimeoutError("the broker did not acknowledge a publish within 120 s")
    finally:
        client.disconnect()
        client.loop_stop()


class DeadLetters:
    """Records the dead letters ``service`` publishes on ``wardwatch/v1/deadletter/{service}`` (read as ``user``)."""

    def __init__(self, broker: Mosquitto, service: str, *, user: str | None = None) -> None:
        self.letters: list[DeadLetter] = []
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dl-{service}", protocol=paho.MQTTv5)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        if user is not None:
            self._client.username_pw_set(*broker.credentials(user))
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._client.subscribe(deadletter_topic(service), qos=1)
        if not self._subscribed.wait(SUBSCRIBE_TIMEOUT_S):
            raise TimeoutError(f"no SUBACK for {deadletter_topic(service)} within {SUBSCRIBE_TIMEOUT_S} s")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        letter = decode(bytes(message.payload))
        assert isinstance(letter, DeadLetter)
        self.letters.append(letter)

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()
