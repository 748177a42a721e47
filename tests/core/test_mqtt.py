"""The core asyncio MQTT client against a real mosquitto: PUBACK futures, manual ack, refusal, reconnect."""

from __future__ import annotations

import asyncio
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient, MqttError, PublishRefusedError, Will
from wardwatch.core.servers import Mosquitto, wait_for


async def test_publish_completes_at_puback_and_subscriber_receives(mosquitto: Mosquitto) -> None:
    settings = mosquitto.endpoint().settings()
    async with MqttClient(settings, "sub") as sub, MqttClient(settings, "pub") as pub:
        await sub.wait_connected(10)
        await pub.wait_connected(10)
        await sub.subscribe("wardwatch/v1/test/#")
        futures = [pub.publish_nowait("wardwatch/v1/test/x", str(i).encode()) for i in range(200)]
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert pub.pending_publishes == 0
        received = [await asyncio.wait_for(sub.get_message(), 10) for _ in range(200)]
    assert [m.payload for m in received] == [str(i).encode() for i in range(200)]


async def test_unacknowledged_messages_are_redelivered_to_a_persistent_session(mosquitto: Mosquitto) -> None:
    """With manual ack, a message not acknowledged before the client goes away comes back on reconnect."""
    settings = mosquitto.endpoint().settings()
    async with MqttClient(settings, "pub") as pub:
        await pub.wait_connected(10)
        async with MqttClient(settings, "ingest-1", manual_ack=True) as sub:
            await sub.wait_connected(10)
            await sub.subscribe("wardwatch/v1/test/#")
            await pub.publish("wardwatch/v1/test/a", b"first")
            message = await asyncio.wait_for(sub.get_message(), 10)
            assert message.payload == b"first"  # received, but never acknowledged
        async with MqttClient(settings, "ingest-1", manual_ack=True) as again:
            await again.wait_connected(10)
            redelivered = await asyncio.wait_for(again.get_message(), 10)
            assert redelivered.payload == b"first"
            again.ack(redelivered)


async def test_acl_refusal_fails_the_publish_future(secure_mosquitto: Mosquitto) -> None:
    settings = secure_mosquitto.endpoint("gw-01").settings()
    async with MqttClient(settings, "gw-01") as gateway:
        await gateway.wait_connected(10)
        await gateway.publish("wardwatch/v1/vitals/ward-a/gw-01/p-1/d-1/spo2", b"{}")
        with pytest.raises(PublishRefusedError, match="Not authorized"):
            await gateway.publish("wardwatch/v1/vitals/ward-a/gw-02/p-1/d-1/spo2", b"{}")


async def test_wrong_password_is_reported(secure_mosquitto: Mosquitto) -> None:
    settings = secure_mosquitto.endpoint("gw-01").settings(password=None)
    async with MqttClient(settings, "gw-01") as gateway:
        with pytest.raises(MqttError, match="refused connection"):
            await gateway.wait_connected(3)


async def test_reconnects_after_broker_restart() -> None:
    async with Mosquitto(persistence=True) as broker:
        settings = broker.endpoint().settings()
        will = Will("wardwatch/v1/gateway/ward-a/gw-01/availability", b"offline")
        async with MqttClient(settings, "watcher") as watcher, MqttClient(settings, "gw-01", will=will) as gateway:
            await watcher.wait_connected(10)
            await gateway.wait_connected(10)
            await watcher.subscribe("wardwatch/v1/gateway/#")
            await broker.stop()
            await gateway.wait_disconnected()
            await broker.start()
            await gateway.wait_connected(30)
            await watcher.wait_connected(30)
            await gateway.publish("wardwatch/v1/gateway/ward-a/gw-01/availability", b"online", retain=True)
            seen: list[bytes] = []

            async def online_seen() -> bool:
                message = await asyncio.wait_for(watcher.get_message(), 10)
                seen.append(message.payload)
                return message.payload == b"online"

            await wait_for(online_seen, 20)
            assert gateway.connects >= 2


async def test_starts_before_the_broker_and_queues_publishes_while_down(tmp_path: Path) -> None:
    """A client started while the broker is down keeps trying; a publish made meanwhile is sent later."""
    broker = Mosquitto(directory=tmp_path / "late-broker")
    settings = broker.endpoint().settings()
    async with MqttClient(settings, "early", backoff_max_s=0.5) as early:
        pending = early.publish_nowait("wardwatch/v1/test/early", b"queued while down", retain=True)
        assert not pending.done()
        async with broker:
            await early.wait_connected(20)
            await asyncio.wait_for(pending, 10)
            async with MqttClient(settings, "watcher") as watcher:
                await watcher.wait_connected(10)
                await watcher.subscribe("wardwatch/v1/test/#")
                message = await asyncio.wait_for(watcher.get_message(), 10)
    assert (message.payload, message.retain) == (b"queued while down", True)


async def test_subscribing_without_retained_messages_and_with_the_retain_flag_as_published(
    mosquitto: Mosquitto,
) -> None:
    settings = mosquitto.endpoint().settings()
    async with MqttClient(settings, "pub", clean_start=True) as pub:
        await pub.wait_connected(10)
        await pub.publish("wardwatch/v1/test/stored", b"old", retain=True)
        async with MqttClient(settings, "live", clean_start=False) as live, MqttClient(settings, "all") as everything:
            await live.wait_connected(10)
            await everything.wait_connected(10)
            await live.subscribe("wardwatch/v1/test/#", retained=False, retain_as_published=True)
            await everything.subscribe("wardwatch/v1/test/#")
            assert (await asyncio.wait_for(everything.get_message(), 10)).payload == b"old"
            await pub.publish("wardwatch/v1/test/stored", b"new", retain=True)
            await pub.publish("wardwatch/v1/test/plain", b"plain")
            received = [await asyncio.wait_for(live.get_message(), 10) for _ in range(2)]
            # subscribing again (as after every reconnect) does not bring it either
            await live.subscribe("wardwatch/v1/test/#", retained=False, retain_as_published=True)
            await pub.publish("wardwatch/v1/test/plain", b"fence")
            fence = await asyncio.wait_for(live.get_message(), 10)
    assert [(m.payload, m.retain) for m in received] == [(b"new", True), (b"plain", False)]
    assert fence.payload == b"fence"


async def test_the_fast_publish_path_delivers_what_paho_would(mosquitto: Mosquitto) -> None:
    """Topic, payload, QoS and retain flag, with and without MQTT 5 properties, a multi-byte length and UTF-8."""
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    async with MqttClient(settings, "fast-sub", clean_start=True) as sub:
        assert sub.fast_publish
        await sub.wait_connected(5)
        await sub.subscribe("t/#", retain_as_published=True)
        sender = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        sender.connect(mosquitto.host, mosquitto.port)
        sender.loop_start()
        try:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = 60
            properties.UserProperty = [("k", "v" * 300)]
            big = bytes(range(256)) * 600  # a remaining length of three bytes
            sent = [
                ("t/a", b"plain", 1, False, None),
                ("t/b", b"with properties", 1, False, properties),
                ("t/ü/c", big, 0, False, None),
                ("t/d", b"", 1, True, properties),
            ]
            for topic, payload, qos, retain, props in sent:
                sender.publish(topic, payload, qos=qos, retain=retain, properties=props).wait_for_publish(5)
            received = [await asyncio.wait_for(sub.get_message(), 5) for _ in sent]
        finally:
            sender.disconnect()
            sender.loop_stop()
    assert [(m.topic, m.payload, m.qos, m.retain) for m in received] == [(t, p, q, r) for t, p, q, r, _ in sent]
    assert all(m.mid > 0 for m in received if m.qos == 1)
