"""Gateway hop latency: notification bytes -> decode -> durable queue -> MQTT -> a subscriber. Prints JSON.

The same pipeline as ``wardwatch gateway bench`` (decoders, SQLite WAL queue, publisher, real
mosquitto), paced like a ward (seven devices at ``--rate`` Hz), with a subscriber on the vitals
topics: the time from handing the bytes to the decoder to the subscriber receiving the message is
the gateway's share of the alarm latency. ``--paho-inflight`` sets paho's own in-flight bound (the
gateway passes 0: its publisher bounds in-flight publishes); run with 256 to compare.

    .venv/bin/python -m wardwatch.gateway.bench_latency [--seconds 20] [--rate 1] [--paho-inflight 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from wardwatch.core import gatt
from wardwatch.core.config import MqttSettings
from wardwatch.core.errors import WaitTimeoutError
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import DeviceRole, Sample, Signal, Vitals, decode
from wardwatch.core.servers import Mosquitto
from wardwatch.core.waiting import wait_for
from wardwatch.gateway.config import DeviceBinding
from wardwatch.gateway.publisher import Publisher
from wardwatch.gateway.queue import DurableQueue
from wardwatch.gateway.readings import DeviceDecoder, Recorder

_HR = gatt.encode_heart_rate_measurement(gatt.HeartRateMeasurement(72, True, None, (820,)))
_PLX = gatt.encode_plx_continuous_measurement(
    gatt.PlxContinuousMeasurement(gatt.MedFloat(97), gatt.MedFloat(72), pulse_amplitude_index=gatt.MedFloat(52, -1))
)


class _TimedRecorder(Recorder):
    """Notes when each vitals message is queued (by device and sequence number)."""

    def __init__(self, queue: DurableQueue, *, gateway: str, ward: str, sent_at: dict[tuple[str, int], float]) -> None:
        super().__init__(queue, gateway=gateway, ward=ward)
        self.sent_at = sent_at

    def vitals(self, binding: DeviceBinding, signal: Signal, samples: tuple[Sample, ...]) -> list[Vitals]:
        messages = super().vitals(binding, signal, samples)
        for message in messages:
            self.sent_at[(message.device, message.seq)] = time.perf_counter()
        return messages


async def main(seconds: float, rate: float, devices: int, paho_inflight: int) -> dict[str, object]:
    """Run the paced ward and return the latency figures."""
    latencies: list[float] = []
    sent_at: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="wardwatch-gw-latency-") as tmp:
        async with Mosquitto(directory=Path(tmp) / "mosquitto", persistence=False) as broker:
            settings = MqttSettings(host=broker.host, port=broker.port, tls=False)
            async with (
                DurableQueue(Path(tmp) / "queue.sqlite3") as queue,
                MqttClient(settings, "bench-gateway", max_inflight=paho_inflight) as mqtt,
                MqttClient(settings, "bench-subscriber", clean_start=True) as sub,
            ):
                await mqtt.wait_connected(10)
                await sub.wait_connected(10)
                await sub.subscribe("wardwatch/v1/vitals/#", qos=1)
                recorder = _TimedRecorder(queue, gateway="gw-bench", ward="ward-bench", sent_at=sent_at)
                bindings = [
                    DeviceBinding(
                        id=f"dev-{i}",
                        patient=f"p-{i}",
                        role=DeviceRole.HEART_RATE_STRAP if i % 2 == 0 else DeviceRole.PULSE_OXIMETER,
                        address=f"AA:BB:CC:DD:EE:{i:02X}",
                    )
                    for i in range(devices)
                ]
                decoders = [DeviceDecoder(b, recorder) for b in bindings]
                publisher = Publisher(queue, mqtt, gateway="gw-bench", ward="ward-bench")

                async def receive() -> None:
                    async for message in sub.messages():
                        received = time.perf_counter()
                        vitals = decode(message.payload)
                        if isinstance(vitals, Vitals):
                            start = sent_at.pop((vitals.device, vitals.seq), None)
                            if start is not None:
                                latencies.append((received - start) * 1000)

                tasks = [asyncio.create_task(publisher.run()), asyncio.create_task(receive())]
                try:
                    loop = asyncio.get_running_loop()
                    begin = loop.time()
                    n = 0
                    while loop.time() - begin < seconds:
                        for decoder in decoders:
                            if decoder.binding.role == DeviceRole.HEART_RATE_STRAP:
                                decoder.handle(gatt.HEART_RATE_MEASUREMENT, _HR)
                            else:
                                decoder.handle(gatt.PLX_CONTINUOUS_MEASUREMENT, _PLX)
                        n += 1
                        await asyncio.sleep(max(0.0, begin + n / rate - loop.time()))
                    with contextlib.suppress(WaitTimeoutError):  # whatever is still missing counts as lost
                        await wait_for(lambda: not sent_at, 10, what="every message at the subscriber")
                finally:
                    for task in tasks:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
    latencies.sort()
    return {
        "what": "gateway hop: notification -> decode -> SQLite WAL queue -> MQTT QoS 1 -> subscriber",
        "paho_inflight": paho_inflight,
        "devices": devices,
        "rate_hz_per_device": rate,
        "messages": len(latencies),
        "lost": len(sent_at),
        "latency_ms_p50": round(statistics.median(latencies), 2) if latencies else None,
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 2) if latencies else None,
        "latency_ms_max": round(latencies[-1], 2) if latencies else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=1.0, help="notifications per second per device")
    parser.add_argument("--devices", type=int, default=7)
    parser.add_argument("--paho-inflight", type=int, default=0)
    args = parser.parse_args()
    result = asyncio.run(main(args.seconds, args.rate, args.devices, args.paho_inflight))
    json.dump(result, sys.stdout, indent=2)
    print()
