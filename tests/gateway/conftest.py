"""Fixtures of the gateway tests: MQTT settings for a test broker, and a subscriber that records.

Test modules get the helpers through fixtures (``settings_for``, ``collect``), never by importing
this file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from wardwatch.core.config import MqttSettings, Secret
from wardwatch.core.mqtt import Message, MqttClient
from wardwatch.core.schema import Vitals, VitalsBatch, decode
from wardwatch.core.servers import Mosquitto

TIMEOUT = 15.0


def mqtt_settings(broker: Mosquitto, user: str | None = None, **overrides: object) -> MqttSettings:
    """Client settings for ``broker`` as ``user`` (anonymous when None)."""
    endpoint = broker.endpoint(user)
    values: dict[str, object] = {
        "host": endpoint.host,
        "port": endpoint.port,
        "tls": endpoint.tls,
        "ca_file": endpoint.ca_file,
        "username": endpoint.username,
        "password": Secret(endpoint.password) if endpoint.password is not None else None,
        "keepalive_s": 5,
        "session_expiry_s": 600,
    }
    values.update(overrides)
    return MqttSettings(**values)  # type: ignore[arg-type]


class Collector:
    """Everything received on the subscribed filters, in arrival order."""

    def __init__(self, mqtt: MqttClient) -> None:
        self.mqtt = mqtt
        self.messages: list[Message] = []

    async def run(self) -> None:
        async for message in self.mqtt.messages():
            self.messages.append(message)

    def on(self, topic_prefix: str) -> list[Message]:
        """Messages whose topic starts with ``topic_prefix``."""
        return [m for m in self.messages if m.topic.startswith(topic_prefix)]

    def vitals(self) -> list[Vitals]:
        """Every vitals message received (duplicates included), in arrival order."""
        out = []
        for m in self.messages:
            decoded = decode(m.payload) if m.payload.startswith(b"{") else None
            if isinstance(decoded, Vitals):
                out.append(decoded)
            elif isinstance(decoded, VitalsBatch):  # the gateway's default: one series per signal
                out.extend(decoded.vitals())
        return out

    def sample_count(self) -> int:
        """Samples in every vitals message received (a batch holds several notifications' samples)."""
        return sum(len(v.samples) for v in self.vitals())

    def unique_seqs(self, device: str) -> list[int]:
        """Sequence numbers of ``device`` in arrival order, duplicates removed (first kept)."""
        seen: set[int] = set()
        order = []
        for v in self.vitals():
            if v.device == device and v.seq not in seen:
                seen.add(v.seq)
                order.append(v.seq)
        return order


@asynccontextmanager
async def collecting(
    settings: MqttSettings, topic_filter: str, *, client_id: str = "test-collector", persistent: bool = False
) -> AsyncIterator[Collector]:
    """Subscribe to ``topic_filter`` (QoS 1) and record; ``persistent`` keeps the session across restarts."""
    async with MqttClient(
        settings, client_id, clean_start=not persistent, backoff_min_s=0.1, backoff_max_s=0.5
    ) as mqtt:
        await mqtt.wait_connected(TIMEOUT)
        await mqtt.subscribe(topic_filter, qos=1)
        collector = Collector(mqtt)
        task = asyncio.create_task(collector.run())
        try:
            yield collector
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


SettingsFor = Callable[..., MqttSettings]
Collect = Callable[..., AbstractAsyncContextManager[Collector]]


@pytest.fixture
def settings_for() -> SettingsFor:
    """:func:`mqtt_settings`: ``settings_for(broker, user=None, **overrides)``."""
    return mqtt_settings


@pytest.fixture
def collect() -> Collect:
    """:func:`collecting`: ``async with collect(settings, filter, client_id=..., persistent=...) as sub``."""
    return collecting
