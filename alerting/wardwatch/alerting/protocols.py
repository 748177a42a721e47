"""The extension points of the alerting service: the Protocols other code implements, and nothing else.

* :class:`ConditionSource`: the alarm engine as the service drives it (:class:`wardwatch.alerting.engine.Engine`).
* :class:`Channel`: a way to deliver a page (webhook, PagerDuty, SMTP, MQTT in :mod:`.paging.channels`).
* :class:`Publisher`: the QoS 1 publish the MQTT channel and the service need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wardwatch.alerting.events import ConditionChange
    from wardwatch.alerting.rules import RuleSet
    from wardwatch.core.schema import DataGap, DeviceStatus, GatewayStatus, Page, Vitals

__all__ = ["Channel", "ConditionSource", "Publisher"]


class ConditionSource(Protocol):
    """What the service needs from the alarm engine (:class:`wardwatch.alerting.engine.Engine`; pure)."""

    def on_vitals(self, msg: Vitals, ward: str) -> Sequence[ConditionChange]:
        """Feed one vitals message."""
        ...

    def on_device_status(self, msg: DeviceStatus, ward: str) -> Sequence[ConditionChange]:
        """Feed one device status."""
        ...

    def on_gateway_availability(self, ward: str, gateway: str, online: bool, t: int) -> Sequence[ConditionChange]:
        """A gateway came online or went offline."""
        ...

    def on_data_gap(self, msg: DataGap, ward: str) -> Sequence[ConditionChange]:
        """A gateway dropped readings."""
        ...

    def on_gateway_status(self, msg: GatewayStatus) -> Sequence[ConditionChange]:
        """A gateway's periodic status (device-to-patient bindings)."""
        ...

    def tick(self, now_ms: int) -> Sequence[ConditionChange]:
        """Time passed (deadman timers, delays)."""
        ...

    def set_rules(self, rules: RuleSet) -> None:
        """Apply a new rule set (a clinician changed a patient's thresholds); raise if it cannot be applied."""
        ...


class Channel(Protocol):
    """A way to deliver a page; ``name`` is safe to log and audit (no secrets)."""

    @property
    def name(self) -> str:
        """E.g. ``webhook:0`` (type and position in the destination's list)."""
        ...

    async def send(self, page: Page) -> None:
        """Deliver once or raise :class:`DeliveryError`."""
        ...


class Publisher(Protocol):
    """What the MQTT channel needs: QoS 1 publish that waits for the broker's acknowledgement."""

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish ``payload``."""
        ...
