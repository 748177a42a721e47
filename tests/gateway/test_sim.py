"""End to end through the simulator's bleak backend: simulated wearables -> gateway -> real mosquitto.

The gateway runs unmodified: bleak's own ``backend=`` argument (``bleak_arguments``, passed as the
gateway's client and scanner keyword arguments) makes ``BleakScanner``/``BleakClient`` use the
simulator's bumble-based backend (the same code runs on BlueZ).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import signal
import socket
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.gateway.harness import FAST_BLE
from tests.gateway.harness import running_gateway as gateway_on_sim_radio

from wardwatch.core import gatt
from wardwatch.core.config import MqttSettings
from wardwatch.core.schema import (
    DataGap,
    DeviceRole,
    DeviceStatus,
    GatewayStatus,
    Signal,
    Vitals,
    VitalsBatch,
    decode,
)
from wardwatch.core.servers import Mosquitto, free_port
from wardwatch.core.topics import availability_topic
from wardwatch.core.waiting import wait_for
from wardwatch.firmware_sim.bleak_backend import BleakArguments, BumbleCentral, bleak_arguments
from wardwatch.firmware_sim.devices import HeartRateStrap, PulseOximeter, SimulatedDevice, make_device
from wardwatch.firmware_sim.model import HeartRateReading, OximeterReading, SpotCheck
from wardwatch.firmware_sim.radio import SimRadio
from wardwatch.firmware_sim.scenario import DeviceKind, DeviceSpec
from wardwatch.gateway.app import Gateway
from wardwatch.gateway.config import DeviceBinding, GatewayConfig, MetricsSettings, QueueSettings
from wardwatch.gateway.metrics import METRIC_NAMES

TIMEOUT = 20.0
WARD = "ward-a"
GATEWAY = "gw-01"
SettingsFor = Callable[..., MqttSettings]
Collect = Callable[..., Any]  # tests/gateway/conftest.py: collecting()


def spec(kind: DeviceKind, n: int) -> DeviceSpec:
    prefix = "hr" if kind == DeviceKind.HEART_RATE_STRAP else "ox"
    return DeviceSpec(kind=kind, id=f"{prefix}-{n}", name=f"{prefix.upper()} {n}", serial=f"SN{n:04d}")


def binding(device: SimulatedDevice, *, by_name: bool = False) -> DeviceBinding:
    role = DeviceRole.HEART_RATE_STRAP if device.spec.kind == DeviceKind.HEART_RATE_STRAP else DeviceRole.PULSE_OXIMETER
    where = {"name": device.name} if by_name else {"address": device.address}
    return DeviceBinding(id=device.spec.id, patient=f"p-{device.spec.id}", role=role, **where)


def hr_reading(i: int, hr: int = 70) -> HeartRateReading:
    return HeartRateReading(index=i, t_ms=0, heart_rate=hr, contact=True, rr_ticks=(850,), battery=90)


def ox_reading(i: int, spo2: int = 97) -> OximeterReading:
    return OximeterReading(
        index=i,
        t_ms=0,
        spo2=spo2,
        pulse_rate=70,
        pai_tenths=40,
        measurement_status=gatt.MeasurementStatus(0),
        device_sensor_status=gatt.DeviceSensorStatus(0),
        battery=90,
    )


async def send(device: SimulatedDevice, i: int) -> bool:
    if isinstance(device, HeartRateStrap):
        return await device.send(hr_reading(i))
    assert isinstance(device, PulseOximeter)
    return await device.send(ox_reading(i))


@asynccontextmanager
async def simulated(kinds: list[DeviceKind]) -> AsyncIterator[tuple[BumbleCentral, list[SimulatedDevice]]]:
    radio = SimRadio()
    async with contextlib.AsyncExitStack() as stack:
        devices = [
            await stack.enter_async_context(make_device(spec(kind, n), radio, advertising_interval_ms=50))
            for n, kind in enumerate(kinds)
        ]
        central = await stack.enter_async_context(BumbleCentral(radio))
        _selected.append(bleak_arguments(central))
        stack.callback(_selected.pop)
        yield central, devices


_selected: list[BleakArguments] = []  # the simulated radio's bleak arguments, while one is up


def running_gateway(config: GatewayConfig) -> contextlib.AbstractAsyncContextManager[Gateway]:
    """The gateway on the simulated radio that is up (the real radio's arguments when there is none)."""
    return gateway_on_sim_radio(config, _selected[-1] if _selected else None)


def config_for(devices: list[DeviceBinding], settings: MqttSettings, tmp_path: Path, **queue: Any) -> GatewayConfig:
    return GatewayConfig(
        gateway_id=GATEWAY,
        ward=WARD,
        mqtt=settings,
        devices=tuple(devices),
        ble=FAST_BLE,
        queue=QueueSettings(path=tmp_path / "queue.sqlite3", commit_interval_s=0.05, **queue),
        status_interval_s=0.5,
    )


@asynccontextmanager
async def one_strap(
    settings: MqttSettings, tmp_path: Path, collect: Collect
) -> AsyncIterator[tuple[SimulatedDevice, Any, Gateway]]:
    """A simulated strap bound to a running gateway, its notifications subscribed; every message recorded."""
    async with (
        simulated([DeviceKind.HEART_RATE_STRAP]) as (_central, (strap,)),
        collect(settings, "wardwatch/v1/#") as sub,
        running_gateway(config_for([binding(strap)], settings, tmp_path)) as gateway,
    ):
        await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT)
        yield strap, sub, gateway


async def test_one_strap_end_to_end(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    settings = settings_for(mosquitto)
    async with one_strap(settings, tmp_path, collect) as (strap, sub, gateway):
        for i in range(5):
            assert await send(strap, i)
        await wait_for(lambda: len(heart_rates(sub, strap.spec.id)) >= 5, TIMEOUT)
        assert heart_rates(sub, strap.spec.id) == [70.0] * 5
        assert [v.seq for v in sub.vitals()] == sorted(v.seq for v in sub.vitals())
        statuses = [decode(m.payload) for m in sub.on("wardwatch/v1/device/")]
        connected = [s for s in statuses if isinstance(s, DeviceStatus) and s.connected]
        assert connected
        assert connected[0].serial == "SN0000"
        assert connected[0].battery is not None
        await wait_for(lambda: sub.on(f"wardwatch/v1/gateway/{WARD}/{GATEWAY}/status"), TIMEOUT)
        status = decode(sub.on(f"wardwatch/v1/gateway/{WARD}/{GATEWAY}/status")[-1].payload)
        assert isinstance(status, GatewayStatus)
        assert status.devices[0].connected
        assert sub.on(availability_topic(WARD, GATEWAY))[0].payload == b"online"
        assert gateway.sessions[0].connects == 1


def heart_rates(sub: Any, device: str) -> list[float]:
    return [s.v for v in sub.vitals() if v.device == device and v.signal == Signal.HEART_RATE for s in v.samples]


@pytest.mark.slow
async def test_seven_devices_out_of_range_and_back_with_backfill(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    kinds = [DeviceKind.HEART_RATE_STRAP] * 4 + [DeviceKind.PULSE_OXIMETER] * 3
    settings = settings_for(mosquitto)
    async with simulated(kinds) as (_central, devices):
        bindings = [binding(d, by_name=i == 1) for i, d in enumerate(devices)]  # one bound by name
        async with (
            collect(settings, "wardwatch/v1/#") as sub,
            running_gateway(config_for(bindings, settings, tmp_path)) as gateway,
        ):
            for device in devices:
                main = (
                    gatt.HEART_RATE_MEASUREMENT
                    if isinstance(device, HeartRateStrap)
                    else gatt.PLX_CONTINUOUS_MEASUREMENT
                )
                await device.wait_subscribed(main, TIMEOUT)
            for i in range(10):
                for device in devices:
                    assert await send(device, i)
            strap, oximeter = devices[0], devices[4]
            assert isinstance(oximeter, PulseOximeter)
            await wait_for(lambda: sub.sample_count() >= 4 * 20 + 3 * 30, TIMEOUT, what="first readings")

            await strap.go_out_of_range()
            await oximeter.go_out_of_range()
            taken = dt.datetime.now().replace(microsecond=0) - dt.timedelta(minutes=5)
            stored = SpotCheck(index=0, spo2=93, pulse_rate=88, pai_tenths=31, device_time=taken, clock_set=True)
            assert not await oximeter.spot_check(stored)  # nobody listening: kept on the device
            sessions = {s.binding.id: s for s in gateway.sessions}
            await wait_for(lambda: not sessions[strap.spec.id].connected, TIMEOUT, what="strap link lost")
            await wait_for(lambda: not sessions[oximeter.spec.id].connected, TIMEOUT, what="oximeter link lost")
            assert sum(s.connected for s in gateway.sessions) == 5

            await strap.come_back()
            await oximeter.come_back()
            await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT)
            await wait_for(lambda: sessions[oximeter.spec.id].backfilled == 1, TIMEOUT, what="backfill")
            assert oximeter.stored == []  # deleted on the device once on the gateway's disk
            for i in range(10, 15):
                assert await send(strap, i)
            await wait_for(lambda: len(heart_rates(sub, strap.spec.id)) >= 15, TIMEOUT, what="readings after return")

            spot = [
                v
                for v in sub.vitals()
                if v.device == oximeter.spec.id and v.signal == Signal.SPO2 and v.samples[0].v == 93
            ]
            assert len(spot) == 1
            sample = spot[0].samples[0]
            assert sample.t == int(taken.astimezone().timestamp() * 1000)  # the device's time, not arrival
            assert {"from_storage", "device_clock"} <= set(sample.q)
            assert sessions[strap.spec.id].connects == 2
            reasons = [
                s.reason
                for m in sub.on("wardwatch/v1/device/")
                if isinstance(s := decode(m.payload), DeviceStatus) and s.device == strap.spec.id and not s.connected
            ]
            assert reasons
            assert reasons[0] == "link_lost"
            for device in devices:  # per device: every sequence number once, in order
                seqs = [v.seq for v in sub.vitals() if v.device == device.spec.id]
                assert seqs == list(range(len(seqs)))


async def test_malformed_bytes_are_skipped_and_the_session_goes_on(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    settings = settings_for(mosquitto)
    async with one_strap(settings, tmp_path, collect) as (strap, sub, gateway):
        assert await send(strap, 0)
        for garbage in (b"\x10\x46\x01", b"", b"\xff\xff\xff", b"\x01\xf4\x01"):
            await strap.send_raw(gatt.HEART_RATE_MEASUREMENT, garbage)
        assert await send(strap, 1)
        await wait_for(lambda: len(heart_rates(sub, strap.spec.id)) == 2, TIMEOUT)
        session = gateway.sessions[0]
        assert session.decoder.malformed == 4
        assert (session.connects, session.connected) == (1, True)
        await wait_for(
            lambda: any(
                isinstance(s := decode(m.payload), DeviceStatus) and s.malformed_total == 4
                for m in sub.on("wardwatch/v1/device/")
            ),
            TIMEOUT,
            what="malformed count in the device status",
        )


_KILLED_GATEWAY = """
import asyncio, sys
from pathlib import Path
from wardwatch.core.config import MqttSettings
from wardwatch.firmware_sim.bleak_backend import BumbleCentral, bleak_arguments
from wardwatch.firmware_sim.devices import make_device
from wardwatch.firmware_sim.model import HeartRateReading
from wardwatch.firmware_sim.radio import SimRadio
from wardwatch.firmware_sim.scenario import DeviceKind, DeviceSpec
from wardwatch.gateway.app import Gateway
from wardwatch.gateway.config import BleSettings, DeviceBinding, GatewayConfig, QueueSettings
from wardwatch.core.schema import DeviceRole

async def main(queue_path: str, port: int) -> None:
    radio = SimRadio()
    async with make_device(DeviceSpec(kind=DeviceKind.HEART_RATE_STRAP, id="hr-0"), radio) as strap, \\
            BumbleCentral(radio) as central:
        selected = bleak_arguments(central)
        config = GatewayConfig(
            gateway_id="gw-01", ward="ward-a",
            mqtt=MqttSettings(host="127.0.0.1", port=port, tls=False),
            devices=(DeviceBinding(id="hr-0", patient="p-0", role=DeviceRole.HEART_RATE_STRAP,
                                   address=strap.address),),
            ble=BleSettings(connect_timeout_s=3, scan_window_s=1, backoff_min_s=0.05, backoff_max_s=0.5),
            queue=QueueSettings(path=Path(queue_path), max_messages=300, commit_interval_s=0.02),
        )
        gateway = asyncio.create_task(Gateway(config, use_default_recovery=False,
                                              client_kwargs=selected.client_kwargs,
                                              scanner_kwargs=selected.scanner_kwargs).run())
        await strap.wait_subscribed(0x2A37, 20)
        i = 0
        while True:
            await strap.send(HeartRateReading(index=i, t_ms=0, heart_rate=60 + i % 40, contact=True,
                                              rr_ticks=(), battery=90))
            i += 1
            await asyncio.sleep(0.002)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _queue_figures(path: Path) -> tuple[int, list[int]]:
    import sqlite3

    if not path.exists():
        return 0, []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        dropped = db.execute("SELECT coalesce(max(value), 0) FROM counters WHERE name = 'dropped_total'").fetchone()[0]
        payloads = db.execute(
            "SELECT payload FROM messages WHERE topic LIKE '%/heart_rate' OR topic LIKE '%/batch' ORDER BY id"
        ).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return 0, []
    finally:
        db.close()
    seqs = []
    for (payload,) in payloads:
        message = decode(bytes(payload))
        series = message.vitals() if isinstance(message, VitalsBatch) else [message]
        for vitals in series:
            assert isinstance(vitals, Vitals)
            if vitals.signal == Signal.HEART_RATE:
                seqs.append(vitals.seq)
    return int(dropped), seqs


@pytest.mark.slow
async def test_kill_9_with_a_full_queue_then_restart_loses_nothing_queued(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    """The broker is down, the queue overflows (oldest dropped, counted), the gateway dies by SIGKILL."""
    settings = settings_for(mosquitto)
    await mosquitto.stop()
    queue_path = tmp_path / "queue.sqlite3"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_GATEWAY, str(queue_path), str(mosquitto.port), stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_for(lambda: _queue_figures(queue_path)[0] >= 200, 60, what="queue overflowing")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    dropped, kept = _queue_figures(queue_path)
    assert dropped >= 200
    assert len(kept) >= 250
    assert kept == list(range(kept[0], kept[0] + len(kept)))

    await mosquitto.start()
    async with (
        collect(settings, "wardwatch/v1/#") as sub,
        running_gateway(config_for([], settings, tmp_path, max_messages=300)),
    ):
        # every kept reading by its sequence number: a count of samples is reached early by redelivered duplicates
        def all_kept_arrived() -> bool:
            return set(kept) <= {v.seq for v in sub.vitals() if v.signal == Signal.HEART_RATE}

        await wait_for(all_kept_arrived, TIMEOUT, what="the queued readings")
        await wait_for(lambda: sub.on(f"wardwatch/v1/gateway/{WARD}/{GATEWAY}/gap"), TIMEOUT, what="gap report")
    seqs = [v.seq for v in sub.vitals() if v.signal == Signal.HEART_RATE]
    assert list(dict.fromkeys(seqs)) == kept  # every queued reading, in order, once after dedup
    gaps = [decode(m.payload) for m in sub.on(f"wardwatch/v1/gateway/{WARD}/{GATEWAY}/gap")]
    assert sum(g.dropped for g in gaps if isinstance(g, DataGap)) == dropped


def device_statuses(sub: Any, device: str) -> list[DeviceStatus]:
    return [
        s
        for m in sub.on("wardwatch/v1/device/")
        if isinstance(s := decode(m.payload), DeviceStatus) and s.device == device
    ]


async def test_a_silent_device_is_reconnected_by_the_link_watchdog(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    """Connected and subscribed, but no notification for ``stale_after_s``: disconnect and connect again."""
    settings = settings_for(mosquitto)
    config = msgspec.structs.replace(
        config_for([], settings, tmp_path), ble=msgspec.structs.replace(FAST_BLE, stale_after_s=0.5)
    )
    async with simulated([DeviceKind.HEART_RATE_STRAP]) as (_central, (strap,)):
        config = msgspec.structs.replace(config, devices=(binding(strap),))
        async with (
            collect(settings, "wardwatch/v1/#") as sub,
            running_gateway(config) as gateway,
        ):
            session = gateway.sessions[0]
            await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT)
            assert await send(strap, 0)  # one reading, then silence
            await wait_for(lambda: session.connects >= 2, TIMEOUT, what="reconnect after silence")
            assert session.ends["stale"] >= 1
            assert strap.connections_total >= 2  # the device saw a new connection, not just a resubscription
            await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT)
            assert await send(strap, 1)
            await wait_for(lambda: len(heart_rates(sub, strap.spec.id)) == 2, TIMEOUT, what="reading after reconnect")
            await wait_for(
                lambda: any(not s.connected and s.reason == "stale" for s in device_statuses(sub, strap.spec.id)),
                TIMEOUT,
                what="device status saying why the link was dropped",
            )


async def test_a_busy_device_refuses_and_the_session_backs_off_until_it_is_free(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    """Held by another central: the link drops, connects are refused (0x14); once free it connects again."""
    settings = settings_for(mosquitto)
    async with one_strap(settings, tmp_path, collect) as (strap, sub, gateway):
        session = gateway.sessions[0]
        assert await send(strap, 0)
        await strap.set_busy(True)
        await wait_for(lambda: not session.connected, TIMEOUT, what="link dropped by the busy device")
        await wait_for(lambda: strap.refused_total >= 3, TIMEOUT, what="the session retrying (and being refused)")
        failed = sum(session.ends[r] for r in ("connect_failed", "setup_failed", "link_lost_during_setup"))
        assert failed >= 2
        assert session.connects == 1  # refused attempts never count as connections
        assert not await send(strap, 1)  # nobody subscribed meanwhile
        await strap.set_busy(False)
        await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT)
        await wait_for(lambda: session.connected, TIMEOUT)
        assert session.connects == 2
        assert await send(strap, 2)
        await wait_for(lambda: len(heart_rates(sub, strap.spec.id)) == 2, TIMEOUT, what="reading after busy")
        assert heart_rates(sub, strap.spec.id) == [70.0, 70.0]
        await wait_for(
            lambda: (
                [s.connected for s in device_statuses(sub, strap.spec.id) if s.reason not in {None, "battery"}][:3]
                == [True, False, True]
            ),
            TIMEOUT,
            what="connected, lost, connected statuses",
        )
        lost = [s for s in device_statuses(sub, strap.spec.id) if not s.connected and s.reason is not None]
        assert lost[0].reason == "link_lost"
        seqs = [v.seq for v in sub.vitals() if v.device == strap.spec.id]
        assert list(dict.fromkeys(seqs)) == list(range(len(set(seqs))))


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode())


def _samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def test_prometheus_metrics_are_served_and_aggregate_without_patient_ids(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    settings = settings_for(mosquitto)
    port = free_port()
    async with simulated([DeviceKind.HEART_RATE_STRAP, DeviceKind.PULSE_OXIMETER]) as (_central, devices):
        strap, oximeter = devices
        config = msgspec.structs.replace(
            config_for([binding(d) for d in devices], settings, tmp_path), metrics=MetricsSettings(port=port)
        )
        async with (
            collect(settings, "wardwatch/v1/vitals/#") as sub,
            running_gateway(config) as gateway,
        ):
            await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT)
            await oximeter.wait_subscribed(gatt.PLX_CONTINUOUS_MEASUREMENT, TIMEOUT)
            for i in range(3):
                assert await send(strap, i)
                assert await send(oximeter, i)
            await strap.send_raw(gatt.HEART_RATE_MEASUREMENT, b"\xff")
            # strap: HR + RR samples per reading; oximeter: SpO2, PR, PI per reading
            await wait_for(lambda: sub.sample_count() >= 3 * 2 + 3 * 3, TIMEOUT, what="readings")
            await wait_for(lambda: gateway.queue is not None and gateway.queue.depth == 0, TIMEOUT, what="queue empty")
            text = await asyncio.to_thread(_scrape, port)
    values = _samples(text)
    p = "wardwatch_gateway"
    assert values[f"{p}_devices_bound"] == 2
    assert values[f"{p}_devices_connected"] == 2
    assert values[f"{p}_device_connects_total"] == 2
    assert values[f"{p}_device_reconnects_total"] == 0
    assert values[f"{p}_notifications_malformed_total"] == 1
    assert values[f"{p}_notifications_received_total"] >= 3 + 3 + 1
    assert values[f"{p}_samples_queued_total"] >= 15
    assert 1 <= values[f"{p}_readings_queued_total"] <= values[f"{p}_samples_queued_total"]
    assert values[f"{p}_messages_published_total"] >= values[f"{p}_readings_queued_total"]
    assert values[f"{p}_queue_depth"] == 0
    assert values[f"{p}_in_flight_messages"] == 0
    assert values[f"{p}_messages_dropped_total"] == 0
    assert values[f"{p}_messages_dead_lettered_total"] == 0
    assert values[f"{p}_mqtt_connected"] == 1
    assert values[f"{p}_watchdog_healthy"] == 1
    assert values[f"{p}_session_ends_total{{reason=stale}}"] == 0
    assert 0 <= values[f"{p}_last_seen_age_max_seconds"] < 60
    assert f"{p}_device_last_seen_age_seconds" not in text  # per-device labels are opt-in
    assert "p-hr-0" not in text  # no patient ids anywhere
    assert "p-ox-1" not in text
    assert {f.name for f in text_string_to_metric_families(text)} == set(METRIC_NAMES) - {
        f"{p}_device_last_seen_age_seconds"
    }


async def test_metrics_endpoint_answers_404_elsewhere_and_labels_devices_only_when_asked(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor
) -> None:
    settings = settings_for(mosquitto)
    port = free_port()
    config = msgspec.structs.replace(
        config_for([], settings, tmp_path), metrics=MetricsSettings(port=port, device_labels=True)
    )
    async with simulated([DeviceKind.HEART_RATE_STRAP]) as (_central, (strap,)):
        config = msgspec.structs.replace(config, devices=(binding(strap),))
        async with running_gateway(config):
            await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT)
            assert await send(strap, 0)
            with pytest.raises(urllib.error.HTTPError) as missing:
                await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/", timeout=5)
            assert missing.value.code == 404
            missing.value.close()

            async def labelled() -> bool:
                return 'device_last_seen_age_seconds{device="hr-0"}' in await asyncio.to_thread(_scrape, port)

            await wait_for(labelled, TIMEOUT, what="device label")
            values = _samples(await asyncio.to_thread(_scrape, port))
    assert set(values) >= {"wardwatch_gateway_device_last_seen_age_seconds{device=hr-0}"}


class _NotifySocket:
    """A stand-in for systemd's notification socket (abstract namespace): the datagrams it got."""

    def __init__(self) -> None:
        self.address = f"@wardwatch-test-{os.getpid()}-{secrets.token_hex(4)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.setblocking(False)
        self.received: list[str] = []

    def drain(self) -> list[str]:
        """Datagrams that arrived since the last call."""
        fresh = []
        while True:
            try:
                fresh.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        self.received.extend(fresh)
        return fresh

    def close(self) -> None:
        self.sock.close()


async def test_watchdog_ping_is_withheld_while_queue_commits_fail_and_resumes_after(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the queue file's write lock: commits fail, WATCHDOG=1 stops; lock gone: it resumes."""
    notify_socket = _NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "150000")  # a ping every 50 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    settings = settings_for(mosquitto)
    config = config_for([], settings, tmp_path)
    try:
        async with simulated([DeviceKind.HEART_RATE_STRAP]) as (_central, (strap,)):
            config = msgspec.structs.replace(config, devices=(binding(strap),), status_interval_s=0.1)
            backend = _selected[-1]
            gateway = Gateway(
                config,
                use_default_recovery=False,
                commit_stall_s=0.3,
                client_kwargs=backend.client_kwargs,
                scanner_kwargs=backend.scanner_kwargs,
            )
            task = asyncio.create_task(gateway.run())
            try:
                await wait_for(lambda: "WATCHDOG=1" in notify_socket.drain(), TIMEOUT, what="first ping")
                assert notify_socket.received[0] == "READY=1"
                queue = gateway.queue
                assert queue is not None
                blocker = sqlite3.connect(config.queue.path, timeout=10, check_same_thread=False)
                await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")
                try:
                    # the status loop keeps queueing device statuses, so there is always a batch to commit
                    await wait_for(
                        lambda: bool(notify_socket.drain() or True) and gateway.watchdog_withheld >= 1,
                        30,
                        what="the ping withheld",
                    )
                    assert queue.last_commit_error is not None
                    notify_socket.drain()
                    await wait_for(lambda: gateway.watchdog_withheld >= 4, TIMEOUT, what="more checks")
                    assert "WATCHDOG=1" not in notify_socket.drain()
                    assert not gateway.queue_healthy()
                finally:
                    await asyncio.to_thread(blocker.rollback)
                    blocker.close()
                await wait_for(lambda: "WATCHDOG=1" in notify_socket.drain(), TIMEOUT, what="pings resumed")
                assert gateway.queue_healthy()  # commits go through again
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert "STOPPING=1" in notify_socket.drain()
    finally:
        notify_socket.close()
