"""Publishing of :class:`wardwatch.core.mqtt.MqttClient`: one future per QoS 1 publish, resolved at PUBACK."""

from __future__ import annotations

import asyncio
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from wardwatch.core.mqtt.session import MqttError, PublishRefusedError


class Publishing:
    """The publishing half of :class:`~wardwatch.core.mqtt.MqttClient` (which holds the state)."""

    _client: paho.Client
    _loop: asyncio.AbstractEventLoop | None
    _pending: dict[int, tuple[asyncio.Future[None], str]]

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

    @property
    def pending_publishes(self) -> int:
        """QoS 1 publishes not yet acknowledged by the broker."""
        return len(self._pending)
