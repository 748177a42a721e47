"""A stop-gap around :class:`wardwatch.core.mqtt.MqttClient` until two core fixes land.

1. After a failed connect attempt (broker down: ``Connection refused``) the core client never
   tries again: ``_connect_once`` clears the "disconnected" event before the attempt and nothing
   sets it when the attempt raises, so ``_supervise`` waits forever. Here the event is set again.
2. ``publish_nowait`` raises ``RuntimeError`` (from paho's ``is_published``) when called while
   disconnected; the publisher avoids publishing while disconnected and maps that error.

Both fixes are proposed for core in the gateway's report; delete this module once they are in.
"""

from __future__ import annotations

from wardwatch.core.mqtt import MqttClient

__all__ = ["GatewayMqttClient"]


class GatewayMqttClient(MqttClient):
    """:class:`MqttClient` that keeps reconnecting after a refused connect attempt."""

    async def _connect_once(self) -> None:
        try:
            await super()._connect_once()
        except BaseException:
            self._disconnected.set()
            raise
