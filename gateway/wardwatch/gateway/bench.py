"""``wardwatch gateway bench``: the gateway pipeline's cost, measured against a real mosquitto.

The measured path is everything the gateway does per notification after bleak hands it the bytes:
decode -> time-stamp -> sequence number -> JSON -> durable queue (SQLite WAL, batched fsync) ->
publish (QoS 1) -> PUBACK -> delete. The BLE stack itself (BlueZ + D-Bus, or the simulator) is not
in it: its cost depends on the adapter, not on the gateway. Prints JSON; asserts nothing.

Runs:
* ``burst``: N notifications from seven devices as fast as they come: CPU µs per notification.
* ``paced``: seven devices at a realistic rate (1 Hz each ... ``--rate``) for a while: CPU µs per
  notification including timers and commits at low load, and the process's resident memory.
* ``latency``: the paced run again with a subscriber on the vitals topics: from a sample's gateway time
  stamp (reception) to its arrival at the subscriber, the gateway's share of the alarm latency.
* ``replay``: the broker is stopped, a backlog is queued, the broker comes back: messages per second
  from reconnection until the queue is empty.

Each set runs in two modes (``--mode``): ``single``, one ``vitals`` message per signal and notification
(the wire before ``vitals_batch``), and ``batch``, one ``vitals_batch`` per device per queue commit (the
gateway's default); ``--runs N`` alternates them N times and reports medians, with the load average.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from wardwatch.core import gatt
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import DeviceRole, Signal, Vitals, VitalsBatch, decode
from wardwatch.core.servers import Mosquitto
from wardwatch.core.topics import vitals_filter
from wardwatch.core.waiting import wait_for
from wardwatch.gateway.config import DeviceBinding
from wardwatch.gateway.publisher import Publisher
from wardwatch.gateway.queue import DurableQueue
from wardwatch.gateway.readings import DeviceDecoder, Recorder

__all__ = ["bench_main"]

_HR = gatt.encode_heart_rate_measurement(gatt.HeartRateMeasurement(72, True, None, (820,)))  # HR + RR
_PLX = gatt.encode_plx_continuous_measurement(
    gatt.PlxContinuousMeasurement(
        gatt.MedFloat(97), gatt.MedFloat(72), pulse_amplitude_index=gatt.MedFloat(52, -1)
    )  # SpO2 + PR + PI
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
    def __init__(
        self, queue: DurableQueue, publisher: Publisher, recorder: Recorder, decoders: list[DeviceDecoder]
    ) -> None:
        self.queue = queue
        self.publisher = publisher
        self.recorder = recorder
        self.decoders = decoders

    @property
    def messages(self) -> int:
        """Messages queued so far (vitals or vitals batches)."""
        return self.recorder.recorded

    def notify(self, i: int) -> None:
        decoder = self.decoders[i % len(self.decoders)]
        if decoder.binding.role == DeviceRole.HEART_RATE_STRAP:
            decoder.handle(gatt.HEART_RATE_MEASUREMENT, _HR)
        else:
            decoder.handle(gatt.PLX_CONTINUOUS_MEASUREMENT, _PLX)

    async def drained(self, timeout: float = 600) -> None:
        await self.queue.flush()  # queues what a batching recorder still holds
        expected = self.messages
        await wait_for(
            lambda: self.publisher.acked >= expected and self.queue.depth == 0, timeout, what="queue drained"
        )


class _Latency:
    """The gateway hop per notification, at a subscriber: sample time (gateway clock at reception) -> arrival."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.active = False

    def received(self, payload: bytes) -> None:
        if not self.active:
            return
        arrived_ms = time.time() * 1000
        message = decode(payload)
        series: list[Vitals] = (
            message.vitals() if isinstance(message, VitalsBatch) else [message] if isinstance(message, Vitals) else []
        )
        for vitals in series:
            if vitals.signal in _TIMED:  # one sample per notification
                self.ms.extend(arrived_ms - sample.t for sample in vitals.samples)

    def figures(self) -> dict[str, Any]:
        ms = sorted(self.ms)
        if not ms:
            return {"notifications_timed": 0}
        return {
            "notifications_timed": len(ms),
            "latency_ms_p50": round(statistics.median(ms), 1),
            "latency_ms_p99": round(ms[max(0, int(len(ms) * 0.99) - 1)], 1),
            "latency_ms_max": round(ms[-1], 1),
        }


_TIMED: Final = frozenset({Signal.HEART_RATE, Signal.SPO2})


async def _burst(rig: _Rig, notifications: int) -> dict[str, Any]:
    acked0, messages0 = rig.publisher.acked, rig.messages
    cpu0, wall0 = time.process_time(), time.perf_counter()
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


async def _paced(rig: _Rig, devices: int, rate_hz: float, seconds: float, latency: _Latency | None) -> dict[str, Any]:
    acked0, messages0 = rig.publisher.acked, rig.messages
    if latency is not None:
        latency.active = True
    cpu0 = time.process_time()
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
    if latency is not None:
        latency.active = False
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
        "cpu_us_per_replayed_notification": round(cpu / backlog_notifications * 1e6, 1),
    }


async def _latency(rig: _Rig, settings: MqttSettings, devices: int, rate_hz: float, seconds: float) -> dict[str, Any]:
    """A paced run with a subscriber on the vitals topics: the gateway hop per notification."""
    latency = _Latency()
    async with MqttClient(settings, "bench-subscriber", clean_start=True) as subscriber:
        await subscriber.wait_connected(10)
        await subscriber.subscribe(vitals_filter(), qos=1)

        async def receive() -> None:
            async for message in subscriber.messages():
                latency.received(message.payload)

        task = asyncio.create_task(receive())
        try:
            await _paced(rig, devices, rate_hz, seconds, latency)
            # the last messages are acknowledged by the broker; give the subscriber their delivery too
            await asyncio.sleep(0.5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return {"devices": devices, "rate_hz_per_device": rate_hz, "seconds": seconds, **latency.figures()}


async def _bench_mode(
    *,
    batch: bool,
    devices: int,
    notifications: int,
    backlog: int,
    in_flight: int,
    rate_hz: float,
    paced_seconds: float,
) -> dict[str, Any]:
    """The four runs with a recorder that batches (``batch``) or sends one message per signal."""
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
                recorder = Recorder(queue, gateway="gw-bench", ward="ward-bench", batch=batch)
                decoders = [DeviceDecoder(b, recorder) for b in _bindings(devices)]
                publisher = Publisher(queue, mqtt, gateway="gw-bench", ward="ward-bench", in_flight=in_flight)
                rig = _Rig(queue, publisher, recorder, decoders)
                task = asyncio.create_task(publisher.run())
                try:
                    burst = await _burst(rig, notifications)
                    paced = await _paced(rig, devices, rate_hz, paced_seconds, None)
                    latency = await _latency(rig, settings, devices, rate_hz, paced_seconds)
                    replay = await _replay(rig, broker, mqtt, backlog)
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    return {"burst": burst, "paced": paced, "latency": latency, "replay": replay}


_HEADLINE: Final = (
    ("burst", "cpu_us_per_notification"),
    ("burst", "messages"),
    ("paced", "cpu_us_per_notification"),
    ("latency", "latency_ms_p50"),
    ("latency", "latency_ms_p99"),
    ("replay", "replay_seconds"),
    ("replay", "cpu_us_per_replayed_notification"),
)


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for run, figure in _HEADLINE:
        values = [r[run][figure] for r in runs if figure in r[run]]
        if values:
            out[f"{run}.{figure}"] = statistics.median(values)
    return out


async def bench_main(
    *,
    devices: int = 7,
    notifications: int = 20_000,
    backlog: int = 20_000,
    in_flight: int = 256,
    rate_hz: float = 1.0,
    paced_seconds: float = 20.0,
    runs: int = 1,
    modes: tuple[str, ...] = ("single", "batch"),
) -> dict[str, Any]:
    """Run the three benchmarks ``runs`` times per mode (alternating) and return their figures.

    Modes: ``single`` is one vitals message per signal and notification (the wire before vitals_batch);
    ``batch`` one vitals_batch per device per queue commit (the gateway's default).
    """
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(runs):
        for mode in modes:
            results[mode].append(
                await _bench_mode(
                    batch=mode == "batch",
                    devices=devices,
                    notifications=notifications,
                    backlog=backlog,
                    in_flight=in_flight,
                    rate_hz=rate_hz,
                    paced_seconds=paced_seconds,
                )
            )
    return {
        "what": "gateway pipeline: notification bytes -> decode -> SQLite WAL queue -> MQTT QoS 1 -> PUBACK -> delete",
        "latency": "a second paced run with a subscriber: a sample's gateway time stamp -> its arrival at the "
        "subscriber (the gateway's share of the alarm latency)",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "in_flight": in_flight,
        "runs": runs,
        "medians": {mode: _medians(results[mode]) for mode in modes},
        "modes": {mode: results[mode] if runs > 1 else results[mode][0] for mode in modes},
        "rss_mib_end": round(_rss_mib(), 1),
    }
