"""Runs inside the test VM (``scripts/vm/vm.py``): the unmodified gateway against real BlueZ.

Simulated wearables (a heart-rate strap and a pulse oximeter from :mod:`wardwatch.firmware_sim`)
sit on a bumble link whose controller the kernel sees through ``/dev/vhci``; ``bluetoothd`` drives
it, and the gateway's code talks to BlueZ through bleak's default (BlueZ, D-Bus) backend. MQTT is
left out: the sessions record into the gateway's real durable queue through a :class:`Recorder`
that also keeps what it queued. Each scenario's facts (or its error) go to one JSON file that
``test_gateway_vm.py`` asserts on; this driver itself asserts nothing.

    python tests/gateway_vm/guest_driver.py RESULT.json    # bluetoothd.log goes beside RESULT.json
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bleak import BleakScanner
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from wardwatch.core import gatt
from wardwatch.core.errors import WaitTimeoutError
from wardwatch.core.schema import DeviceRole, Sample, Signal, Vitals
from wardwatch.core.waiting import wait_for
from wardwatch.firmware_sim.devices import HeartRateStrap, PulseOximeter, SimulatedDevice
from wardwatch.firmware_sim.model import HeartRateReading, OximeterReading, SpotCheck
from wardwatch.firmware_sim.scenario import DeviceKind, DeviceSpec
from wardwatch.firmware_sim.vhci import VhciRadio
from wardwatch.gateway.ble import DeviceSession, Radio
from wardwatch.gateway.config import BleSettings, DeviceBinding
from wardwatch.gateway.queue import DurableQueue
from wardwatch.gateway.readings import Recorder
from wardwatch.gateway.scan import scan_main

_log = logging.getLogger("guest_driver")

TIMEOUT: Final = 45.0  # any one condition (software-emulated CPU: generous)
VM_BLE: Final = BleSettings(
    connect_timeout_s=20.0,
    operation_timeout_s=15.0,
    scan_window_s=4.0,
    seen_ttl_s=10.0,
    backoff_min_s=0.2,
    backoff_max_s=2.0,
    stale_after_s=120.0,
)
READINGS: Final = 5  # per device and phase


def uptime() -> float:
    """Seconds since the guest kernel started."""
    return float(Path("/proc/uptime").read_text().split()[0])


# -- the radio: simulated wearables, the vhci controller, bluetoothd -----------------------------


async def _hci0_powered(bus: MessageBus) -> bool | None:
    """hci0's ``Powered`` property on org.bluez; None while bluetoothd does not export hci0 (yet)."""
    reply = await bus.call(
        Message(
            destination="org.bluez",
            path="/org/bluez/hci0",
            interface="org.freedesktop.DBus.Properties",
            member="Get",
            signature="ss",
            body=["org.bluez.Adapter1", "Powered"],
        )
    )
    if reply is None or reply.message_type != MessageType.METHOD_RETURN:
        return None
    return bool(reply.body[0].value)


async def _run(*command: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {output.decode(errors='replace')}")
    return output.decode(errors="replace")


@contextlib.asynccontextmanager
async def bluetoothd(log: Path) -> AsyncIterator[None]:
    """``bluetoothd -n`` with the vhci controller powered on (``btmgmt --index 0 power on``)."""
    with log.open("wb") as out:
        daemon = await asyncio.create_subprocess_exec("bluetoothd", "-n", stdout=out, stderr=asyncio.subprocess.STDOUT)
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:

        async def exported() -> bool:
            return await _hci0_powered(bus) is not None

        async def powered() -> bool:
            return await _hci0_powered(bus) is True

        await wait_for(exported, TIMEOUT, what="bluetoothd exporting hci0")
        await _run("btmgmt", "--index", "0", "power", "on")
        await wait_for(powered, TIMEOUT, what="hci0 powered")
        yield
    finally:
        bus.disconnect()
        if daemon.returncode is None:
            daemon.terminate()
            await daemon.wait()


# -- the gateway side ----------------------------------------------------------------------------


class KeepingRecorder(Recorder):
    """The gateway's recorder (numbering, encoding, the durable queue) that also keeps each Vitals."""

    def __init__(self, queue: DurableQueue, *, gateway: str, ward: str) -> None:
        super().__init__(queue, gateway=gateway, ward=ward)
        self.kept: list[Vitals] = []

    def vitals(self, binding: DeviceBinding, signal: Signal, samples: tuple[Sample, ...]) -> list[Vitals]:
        """Queue the messages (as the gateway does) and keep them."""
        messages = super().vitals(binding, signal, samples)
        self.kept += messages
        return messages

    def values(self, device: str, signal: Signal) -> list[float | None]:
        """Every sample value of ``device``'s ``signal`` so far."""
        return [s.v for m in self.kept if m.device == device and m.signal == signal for s in m.samples]


@dataclass
class World:
    """Everything the scenarios share."""

    strap: HeartRateStrap
    oximeter: PulseOximeter
    workdir: Path
    sessions: dict[str, DeviceSession] = field(default_factory=dict)
    recorder: KeepingRecorder | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def binding(device: SimulatedDevice) -> DeviceBinding:
    """The gateway's binding of ``device`` (by address: what BlueZ reports)."""
    role = DeviceRole.HEART_RATE_STRAP if isinstance(device, HeartRateStrap) else DeviceRole.PULSE_OXIMETER
    return DeviceBinding(id=device.spec.id, patient=f"p-{device.spec.id}", role=role, address=device.address)


def hr_reading(i: int) -> HeartRateReading:
    """Heart rate 60 + i bpm, one RR interval."""
    return HeartRateReading(index=i, t_ms=0, heart_rate=60 + i, contact=True, rr_ticks=(1024,), battery=90)


def ox_reading(i: int) -> OximeterReading:
    """SpO2 90 + i %, pulse rate 70 bpm."""
    return OximeterReading(
        index=i,
        t_ms=0,
        spo2=90 + i,
        pulse_rate=70,
        pai_tenths=40,
        measurement_status=gatt.MeasurementStatus(0),
        device_sensor_status=gatt.DeviceSensorStatus(0),
        battery=80,
    )


async def send_both(world: World, indices: range) -> None:
    """Notify one reading per device per index, both devices interleaved."""
    for i in indices:
        if not await world.strap.send(hr_reading(i)):
            raise RuntimeError(f"strap reading {i} not delivered")
        if not await world.oximeter.send(ox_reading(i)):
            raise RuntimeError(f"oximeter reading {i} not delivered")


# -- scenarios -----------------------------------------------------------------------------------


async def scenario_scan(world: World) -> dict[str, Any]:
    """``wardwatch gateway scan --json`` (its code, in process) lists both wearables."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = await scan_main(duration=5.0, adapter=None, all_devices=False, as_json=True)
    rows = [json.loads(line) for line in printed.getvalue().splitlines() if line.startswith("{")]
    return {
        "rc": rc,
        "devices": rows,
        "expected": {world.strap.address: world.strap.name, world.oximeter.address: world.oximeter.name},
    }


async def scenario_in_progress(world: World) -> dict[str, Any]:
    """Two scans at once: raw bleak gets org.bluez.Error.InProgress; the gateway's Radio serialises them."""
    raw = await asyncio.gather(
        BleakScanner.find_device_by_name(world.strap.name, timeout=4.0),
        BleakScanner.find_device_by_name(world.oximeter.name, timeout=4.0),
        return_exceptions=True,
    )
    radio = Radio(VM_BLE)
    strap, oximeter = binding(world.strap), binding(world.oximeter)
    gateway = await asyncio.gather(
        radio.scan(4.0, until=lambda s: strap.matches(s.device.address, s.name)),
        radio.scan(4.0, until=lambda s: oximeter.matches(s.device.address, s.name)),
        return_exceptions=True,
    )
    return {
        "raw": [repr(r) if isinstance(r, BaseException) else (r.address if r else None) for r in raw],
        "gateway": [repr(r) if isinstance(r, BaseException) else sorted(s.device.address for s in r) for r in gateway],
        "gateway_scans": radio.scans,
        "strap": world.strap.address,
        "oximeter": world.oximeter.address,
    }


async def scenario_concurrent(world: World) -> dict[str, Any]:
    """Two device sessions at once (one Radio), both subscribed, both delivering decoded readings."""
    assert world.recorder is not None
    radio = Radio(VM_BLE)
    for device in (world.strap, world.oximeter):
        session = DeviceSession(binding(device), radio, world.recorder)
        world.sessions[device.spec.id] = session
        world.tasks.append(asyncio.create_task(session.run(), name=f"session-{device.spec.id}"))
    await asyncio.gather(
        world.strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT * 2),
        world.oximeter.wait_subscribed(gatt.PLX_CONTINUOUS_MEASUREMENT, TIMEOUT * 2),
    )
    sessions = world.sessions.values()
    await wait_for(lambda: all(s.connected for s in sessions), TIMEOUT, what="both sessions connected")
    both_connected = all(s.connected for s in sessions)  # and still so: no session dropped the other
    await send_both(world, range(READINGS))
    recorder = world.recorder
    strap_id, ox_id = world.strap.spec.id, world.oximeter.spec.id
    await wait_for(
        lambda: (
            len(recorder.values(strap_id, Signal.HEART_RATE)) >= READINGS
            and len(recorder.values(ox_id, Signal.SPO2)) >= READINGS
        ),
        TIMEOUT,
        what="decoded readings of both devices",
    )
    return {
        "both_connected": both_connected,
        "heart_rate": recorder.values(strap_id, Signal.HEART_RATE),
        "rr_interval": recorder.values(strap_id, Signal.RR_INTERVAL),
        "spo2": recorder.values(ox_id, Signal.SPO2),
        "pulse_rate": recorder.values(ox_id, Signal.PULSE_RATE),
        "info": {did: s.info for did, s in world.sessions.items()},
        "battery": {did: s.decoder.battery for did, s in world.sessions.items()},
        "connects": {did: s.connects for did, s in world.sessions.items()},
        "queued": recorder.recorded,
    }


async def scenario_reconnect(world: World) -> dict[str, Any]:
    """Both wearables go out of range and come back; the sessions reconnect, the oximeter backfills."""
    assert world.recorder is not None
    recorder = world.recorder
    strap, oximeter = world.sessions[world.strap.spec.id], world.sessions[world.oximeter.spec.id]
    await world.strap.go_out_of_range()
    await world.oximeter.go_out_of_range()
    taken = dt.datetime.now().replace(microsecond=0) - dt.timedelta(minutes=5)
    stored = SpotCheck(index=0, spo2=93, pulse_rate=88, pai_tenths=31, device_time=taken, clock_set=True)
    kept_on_device = not await world.oximeter.spot_check(stored)  # nobody listening: the device keeps it
    await wait_for(lambda: not strap.connected and not oximeter.connected, TIMEOUT, what="links lost")
    reasons = {"strap": strap.last_reason, "oximeter": oximeter.last_reason}
    hr_before = len(recorder.values(world.strap.spec.id, Signal.HEART_RATE))
    spo2_before = len(recorder.values(world.oximeter.spec.id, Signal.SPO2))
    attempts_away = {"strap": strap.attempts, "oximeter": oximeter.attempts}
    await world.strap.come_back()
    await world.oximeter.come_back()
    await wait_for(lambda: strap.connects >= 2 and oximeter.connects >= 2, TIMEOUT * 2, what="both reconnected")
    await asyncio.gather(
        world.strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT),
        world.oximeter.wait_subscribed(gatt.PLX_CONTINUOUS_MEASUREMENT, TIMEOUT),
    )
    backfill_error = None
    try:
        await wait_for(lambda: oximeter.backfilled >= 1, TIMEOUT, what="the oximeter's backfill")
    except WaitTimeoutError as exc:  # reported, and asserted on by its own test
        backfill_error = str(exc)
    await send_both(world, range(READINGS, 2 * READINGS))
    last_hr, last_spo2 = float(hr_reading(2 * READINGS - 1).heart_rate), float(ox_reading(2 * READINGS - 1).spo2 or 0)
    await wait_for(
        lambda: (
            last_hr in recorder.values(world.strap.spec.id, Signal.HEART_RATE)[hr_before:]
            and last_spo2 in recorder.values(world.oximeter.spec.id, Signal.SPO2)[spo2_before:]
        ),
        TIMEOUT,
        what="the last readings after the reconnect",
    )
    return {
        "reasons_lost": reasons,
        "attempts_while_away": attempts_away,
        "connects": {"strap": strap.connects, "oximeter": oximeter.connects},
        "heart_rate_after": recorder.values(world.strap.spec.id, Signal.HEART_RATE)[hr_before:],
        "spo2_after": recorder.values(world.oximeter.spec.id, Signal.SPO2)[spo2_before:],
        "spot_check_kept_on_device": kept_on_device,
        "backfilled": oximeter.backfilled,
        "backfill_error": backfill_error,
        "left_on_device": len(world.oximeter.stored),
        "spo2_all": recorder.values(world.oximeter.spec.id, Signal.SPO2),
    }


# -- the run -------------------------------------------------------------------------------------


async def _scenario(results: dict[str, Any], name: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
    started = time.monotonic()
    entry: dict[str, Any] = {"ok": False}
    try:
        async with asyncio.timeout(TIMEOUT * 3):
            entry["facts"] = await run()
        entry["ok"] = True
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["traceback"] = traceback.format_exc()
    entry["seconds"] = round(time.monotonic() - started, 3)
    results["scenarios"][name] = entry
    _log.info("scenario %s: %s in %.1f s", name, "ok" if entry["ok"] else entry["error"], entry["seconds"])
    return bool(entry["ok"])


async def drive(results: dict[str, Any], logs: Path) -> None:
    """Set the stage (``bluetoothd``'s log into ``logs``), then run every scenario (each records its outcome)."""
    radio = VhciRadio()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "wardwatch-vm"
    workdir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        specs = [
            DeviceSpec(kind=DeviceKind.HEART_RATE_STRAP, id="hr-vm", name="WW-HRS-vm", serial="SN-HR-1"),
            DeviceSpec(kind=DeviceKind.PULSE_OXIMETER, id="ox-vm", name="WW-PLX-vm", serial="SN-OX-1"),
        ]
        strap = await stack.enter_async_context(HeartRateStrap(specs[0], radio))
        oximeter = await stack.enter_async_context(PulseOximeter(specs[1], radio))
        await stack.enter_async_context(radio.expose("vhci", bluez_compatible=True))
        await stack.enter_async_context(bluetoothd(logs / "bluetoothd.log"))
        results["bluez_ready_uptime_s"] = uptime()
        world = World(strap, oximeter, workdir)
        await _scenario(results, "scan", lambda: scenario_scan(world))
        await _scenario(results, "in_progress", lambda: scenario_in_progress(world))
        queue = await stack.enter_async_context(DurableQueue(workdir / "queue.sqlite3", commit_interval_s=0.05))
        world.recorder = KeepingRecorder(queue, gateway="gw-vm", ward="ward-vm")
        stack.push_async_callback(stop_sessions, world)
        if await _scenario(results, "concurrent", lambda: scenario_concurrent(world)):
            await _scenario(results, "reconnect", lambda: scenario_reconnect(world))


async def stop_sessions(world: World) -> None:
    """Cancel the device sessions and wait for them to end."""
    for task in world.tasks:
        task.cancel()
    await asyncio.gather(*world.tasks, return_exceptions=True)


def main(argv: list[str]) -> int:
    """Run everything, write the result JSON (always), exit 0 if it was written."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(argv[0])
    results: dict[str, Any] = {
        "root_switched_uptime_s": float(os.environ.get("WARDWATCH_VM_ROOT_SWITCHED_S", "nan")),
        "driver_start_uptime_s": uptime(),
        "scenarios": {},
    }
    started = time.monotonic()
    try:
        asyncio.run(drive(results, out.parent))
    except BaseException as exc:  # the stage itself failed: say so in the result
        results["error"] = f"{type(exc).__name__}: {exc}"
        results["traceback"] = traceback.format_exc()
    results["driver_s"] = round(time.monotonic() - started, 3)
    results["end_uptime_s"] = uptime()
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(results, indent=2, default=str))
    partial.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
