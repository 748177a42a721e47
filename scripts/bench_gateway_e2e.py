"""End-to-end gateway benchmark: seven simulated wearables -> gateway -> real mosquitto. Prints JSON.

Three processes: the simulator (devices on a bumble link, its controller served over TCP), the gateway
(unmodified, with the simulator's bleak backend on a central reached over that TCP transport) and
this one (mosquitto and a subscriber). The gateway's CPU time and resident memory are read from
/proc. Its CPU includes the bumble BLE host stack that stands in for BlueZ, so it overstates what a
Pi running BlueZ spends in the gateway process; ``wardwatch bench gateway`` measures the pipeline alone.

    .venv/bin/python scripts/bench_gateway_e2e.py [--devices 7] [--rate 5] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.servers import Mosquitto, free_port
from wardwatch.core.waiting import wait_for

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _kinds(devices: int) -> list[str]:
    return ["heart_rate_strap" if i % 2 == 0 else "pulse_oximeter" for i in range(devices)]


async def simulator(port: int, devices: int, rate: float) -> None:
    """Serve the devices' link on tcp-server:127.0.0.1:PORT and notify at ``rate`` Hz each, forever."""
    from wardwatch.core import gatt
    from wardwatch.firmware_sim.devices import HeartRateStrap, PulseOximeter, make_device
    from wardwatch.firmware_sim.model import HeartRateReading, OximeterReading
    from wardwatch.firmware_sim.radio import SimRadio
    from wardwatch.firmware_sim.scenario import DeviceKind, DeviceSpec

    radio = SimRadio()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(radio.expose(f"tcp-server:127.0.0.1:{port}"))
        sims = [
            await stack.enter_async_context(make_device(DeviceSpec(kind=DeviceKind(kind), id=f"d-{i}"), radio))
            for i, kind in enumerate(_kinds(devices))
        ]
        print(json.dumps({"addresses": [d.address for d in sims]}), flush=True)
        i = 0
        while True:
            for device in sims:
                if isinstance(device, HeartRateStrap):
                    await device.send(HeartRateReading(i, 0, 72, True, (830,), 90))
                elif isinstance(device, PulseOximeter):
                    await device.send(
                        OximeterReading(i, 0, 97, 72, 40, gatt.MeasurementStatus(0), gatt.DeviceSensorStatus(0), 90)
                    )
            i += 1
            await asyncio.sleep(1 / rate)


async def gateway(port: int, broker_port: int, addresses: list[str], queue: str) -> None:
    """The gateway, its bleak calls going to the simulator over TCP."""
    from wardwatch.core.schema import DeviceRole
    from wardwatch.firmware_sim.bleak_backend import BumbleCentral, bleak_arguments
    from wardwatch.gateway.app import Gateway
    from wardwatch.gateway.config import BleSettings, DeviceBinding, GatewayConfig, QueueSettings

    bindings = tuple(
        DeviceBinding(id=f"d-{i}", patient=f"p-{i}", role=DeviceRole(kind), address=address)
        for i, (kind, address) in enumerate(zip(_kinds(len(addresses)), addresses, strict=True))
    )
    config = GatewayConfig(
        gateway_id="gw-bench",
        ward="ward-bench",
        mqtt=MqttSettings(host="127.0.0.1", port=broker_port, tls=False),
        devices=bindings,
        ble=BleSettings(scan_window_s=2, backoff_min_s=0.1, backoff_max_s=1),
        queue=QueueSettings(path=Path(queue)),
    )
    async with BumbleCentral.over_transport(f"tcp-client:127.0.0.1:{port}") as central:
        selected = bleak_arguments(central)
        await Gateway(
            config,
            use_default_recovery=False,
            client_kwargs=selected.client_kwargs,
            scanner_kwargs=selected.scanner_kwargs,
        ).run()


async def main(devices: int, rate: float, seconds: float) -> dict[str, object]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="wardwatch-gw-e2e-") as tmp:
        async with Mosquitto(directory=Path(tmp) / "mosquitto") as broker:
            me = [sys.executable, __file__]
            sim = await asyncio.create_subprocess_exec(
                *me, "simulator", str(port), str(devices), str(rate), stdout=asyncio.subprocess.PIPE
            )
            assert sim.stdout is not None
            addresses = json.loads(await sim.stdout.readline())["addresses"]
            gw = await asyncio.create_subprocess_exec(
                *me,
                "gateway",
                str(port),
                str(broker.port),
                ",".join(addresses),
                str(Path(tmp) / "q.db"),
                stderr=asyncio.subprocess.DEVNULL,
            )
            received = 0
            settings = MqttSettings(host=broker.host, port=broker.port, tls=False)
            try:
                async with MqttClient(settings, "bench-sub", clean_start=True) as sub:
                    await sub.wait_connected(10)
                    await sub.subscribe("wardwatch/v1/vitals/#")

                    async def count() -> None:
                        nonlocal received
                        async for _ in sub.messages():
                            received += 1

                    counter = asyncio.create_task(count())
                    # Warm up: every device connected and streaming.
                    await wait_for(lambda: received >= devices * 5, 120, what="all devices streaming")
                    cpu0, received0 = _cpu_s(gw.pid), received
                    await asyncio.sleep(seconds)  # the measurement window
                    cpu, messages = _cpu_s(gw.pid) - cpu0, received - received0
                    rss = _rss_mib(gw.pid)
                    counter.cancel()
            finally:
                for proc in (gw, sim):
                    proc.kill()
                    await proc.wait()
    notifications = devices * rate * seconds
    return {
        "what": "simulated wearables -> gateway (bumble host stack in-process) -> mosquitto",
        "devices": devices,
        "rate_hz_per_device": rate,
        "seconds": seconds,
        "messages_received": messages,
        "gateway_cpu_s": round(cpu, 2),
        "gateway_cpu_percent": round(cpu / seconds * 100, 1),
        "gateway_cpu_us_per_notification": round(cpu / notifications * 1e6),
        "gateway_rss_mib": round(rss, 1),
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "simulator":
        asyncio.run(simulator(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    elif len(sys.argv) > 1 and sys.argv[1] == "gateway":
        asyncio.run(gateway(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(","), sys.argv[5]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--devices", type=int, default=7)
        parser.add_argument("--rate", type=float, default=5.0, help="notifications per second per device")
        parser.add_argument("--seconds", type=float, default=30.0)
        args = parser.parse_args()
        print(json.dumps(asyncio.run(main(args.devices, args.rate, args.seconds)), indent=2))
