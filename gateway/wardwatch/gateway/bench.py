"""``wardwatch gateway bench``: the gateway pipeline's cost, measured against a real mosquitto.

The measured path is everything the gateway does per notification after bleak hands it the bytes:
decode -> time-stamp -> sequence number -> JSON -> durable queue (SQLite WAL, batched fsync) ->
publish (QoS 1) -> PUBACK -> delete. The BLE stack itself (BlueZ + D-Bus, or the simulator) is not
in it: its cost depends on the adapter, not on the gateway. Prints JSON; asserts nothing.

Runs:
* ``burst``: N notifications from seven devices as fast as they come: CPU µs per notification.
* ``paced``: seven devices at a realistic rate (1 Hz each ... ``--rate``) for a while: CPU µs per
  notification including timers and commits at low load, and the process's resident memory.
* ``replay``: the broker is stopped, a backlog is queued, the broker comes back: messages per second
  from reconnection until the queue is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wardwatch.core import gatt
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import DeviceRole
from wardwatch.core.servers import Mosquitto
from wardwatch.core.waiting import wait_for
from wardwatch.gateway.config import DeviceBinding
from wardwatch.gateway.publisher import Publisher
from wardwatch.gateway.queue import DurableQueue
from wardwatch.gateway.readings import DeviceDecoder, Recorder

__all__ = ["bench_main"]

_HR = gatt.encode_heart_rate_measurement(gatt.HeartRateMeasurement(72, True, None, (820,)))  # HR + RR: 2 messages
_PLX = gatt.encode_plx_continuous_measurement(
    gatt.PlxContinuousMeasurement(
        gatt.MedFloat(97), gatt.MedFloat(72), pulse_amplitude_index=gatt.MedFloat(52, -1)
    )  # SpO2 + PR + PI: 3 messages
)


def _rss_mib() -> float:
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bindings(devices: int) -> list[DeviceBinding]:
    out = []
    for i in range(devices):
        role = DeviceRole.HEART_RATE_STRAP if i % 2 == 0 else DeviceRole.PULSE_OXIMETER
        out.append(DeviceBinding(id=f"dev-{i}", patient=f"p-{i}", role=role, address=f"AA:BB:CC:DD:EE:{i:02X}"))
    return out


class _Rig:
    def __init__(self, queue: DurableQueue, publisher: Publisher, decoders: list[DeviceDecoder]) -> None:
        self.queue = queue
        self.publisher = publisher
        self.decoders = decoders
        self.messages = 0

    def notify(self, i: int) -> None:
        decoder = self.decoders[i % len(self.decoders)]
        if decoder.binding.role == DeviceRole.HEART_RATE_STRAP:
            decoder.handle(gatt.HEART_RATE_MEASUREMENT, _HR)
            self.messages += 2
        else:
            decoder.handle(gatt.PLX_CONTINUOUS_MEASUREMENT, _PLX)
            self.messages += 3

    async def drained(self, timeout: float = 600) -> None:
        expected = self.messages
        await wait_for(
            lambda: self.publisher.acked >= expected and self.queue.depth == 0, timeout, what="queue drained"
        )


async def _burst(rig: _Rig, notifications: int) -> dict[str, Any]:
    acked0, cpu0, wall0 = rig.publisher.acked, time.process_time(), time.perf_counter()
    messages0 = rig.messages
    for i in range(notifications):
        rig.notify(i)
        if i % 200 == 199:
            await asyncio.sleep(0)  # let the publisher and the flusher run, as BLE callbacks would
        if rig.queue.depth > 5000:
            await wait_for(lambda: rig.queue.depth < 2000, 60)
    await rig.drained()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    messages = rig.messages - messages0
    return {
        "notifications": notifications,
        "messages": messages,
        "acked": rig.publisher.acked - acked0,
        "cpu_us_per_notification": round(cpu / notifications * 1e6, 1),
        "cpu_us_per_message": round(cpu / messages * 1e6, 1),
        "notifications_per_s": round(notifications / wall),
    }


async def _paced(rig: _Rig, devices: int, rate_hz: float, seconds: float) -> dict[str, Any]:
    acked0, cpu0 = rig.publisher.acked, time.process_time()
    messages0 = rig.messages
    sent = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    tick = 1.0 / rate_hz
    n = 0
    while loop.time() - start < seconds:
        for i in range(devices):
            rig.notify(i)
            sent += 1
        n += 1
        await asyncio.sleep(max(0.0, start + n * tick - loop.time()))
    await rig.drained()
    cpu = time.process_time() - cpu0
    return {
        "devices": devices,
        "rate_hz_per_device": rate_hz,
        "seconds": seconds,
        "notifications": sent,
        "messages": rig.messages - messages0,
        "acked": rig.publisher.acked - acked0,
        "cpu_us_per_notification": round(cpu / sent * 1e6, 1),
        "cpu_percent": round(cpu / seconds * 100, 2),
        "rss_mib": round(_rss_mib(), 1),
    }


async def _replay(rig: _Rig, broker: Mosquitto, mqtt: MqttClient, backlog_notifications: int) -> dict[str, Any]:
    await broker.stop()
    await wait_for(lambda: not mqtt.is_connected, 30, what="gateway to notice the outage")
    messages0 = rig.messages
    for i in range(backlog_notifications):
        rig.notify(i)
        if i % 500 == 499:
            await rig.queue.flush()
    await rig.queue.flush()
    backlog = rig.queue.depth
    await broker.start()
    await mqtt.wait_connected(60)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await rig.drained()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "backlog_messages": backlog,
        "queued_messages": rig.messages - messages0,
        "replay_seconds": round(wall, 3),
        "replay_messages_per_s": round(backlog / wall),
        "cpu_us_per_replayed_message": round(cpu / backlog * 1e6, 1),
    }


async def bench_main(
    *,
    devices: int = 7,
    notifications: int = 20_000,
    backlog: int = 20_000,
    in_flight: int = 256,
    rate_hz: float = 1.0,
    paced_seconds: float = 20.0,
) -> dict[str, Any]:
    """Run the three benchmarks and return their figures."""
    with tempfile.TemporaryDirectory(prefix="wardwatch-gateway-bench-") as tmp:
        async with Mosquitto(directory=Path(tmp) / "mosquitto", persistence=False) as broker:
            settings = MqttSettings(host=broker.host, port=broker.port, tls=False)
            async with (
                DurableQueue(Path(tmp) / "queue.sqlite3") as queue,
                MqttClient(
                    settings,
                    "bench-gateway",
                    max_inflight=0,  # as the gateway: its publisher bounds in-flight publishes
                    backoff_min_s=0.05,
                    backoff_max_s=0.2,
                ) as mqtt,
            ):
                await mqtt.wait_connected(10)
                recorder = Recorder(queue, gateway="gw-bench", ward="ward-bench")
                decoders = [DeviceDecoder(b, recorder) for b in _bindings(devices)]
                publisher = Publisher(queue, mqtt, gateway="gw-bench", ward="ward-bench", in_flight=in_flight)
                rig = _Rig(queue, publisher, decoders)
                task = asyncio.create_task(publisher.run())
                try:
                    burst = await _burst(rig, notifications)
                    paced = await _paced(rig, devices, rate_hz, paced_seconds)
                    replay = await _replay(rig, broker, mqtt, backlog)
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    return {
        "what": "gateway pipeline: notification bytes -> decode -> SQLite WAL queue -> MQTT QoS 1 -> PUBACK -> delete",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "in_flight": in_flight,
        "burst": burst,
        "paced": paced,
        "replay": replay,
        "rss_mib_end": round(_rss_mib(), 1),
    }
