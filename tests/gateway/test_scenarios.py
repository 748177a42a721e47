"""Named simulator scenarios, end to end: model -> simulated wearables -> gateway -> real mosquitto.

Each test loads a scenario of the simulator's library, packs its events closer together (same
kinds, onsets and order; holds capped) and plays it at ``SPEED`` times real time through the
simulator's bleak backend into an unmodified :class:`~wardwatch.gateway.app.Gateway`. What arrives
on ``wardwatch/v1/vitals/#`` is compared with what the model emitted, reading by reading: every
notification the devices delivered arrives once (after dedup by ``seq``), per-device sequence
numbers are contiguous, values, absent reasons and quality flags (``plx_quality`` of the status
bits the device sent) match, spot-checks arrive live or backfilled; device statuses tell about
out-of-range, busy and battery.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
from tests.gateway.harness import FAST_BLE, running_gateway

from wardwatch.core import gatt
from wardwatch.core.config import MqttSettings
from wardwatch.core.quality import plx_quality
from wardwatch.core.schema import AbsentReason, DeviceRole, DeviceStatus, Quality, Signal, Vitals, decode
from wardwatch.core.servers import Mosquitto
from wardwatch.core.waiting import wait_for
from wardwatch.firmware_sim.bleak_backend import BleakArguments, BumbleCentral, bleak_arguments
from wardwatch.firmware_sim.devices import PulseOximeter, SimulatedDevice, make_device
from wardwatch.firmware_sim.model import OximeterTrack, StrapTrack, Track, simulate
from wardwatch.firmware_sim.radio import SimRadio
from wardwatch.firmware_sim.runner import play
from wardwatch.firmware_sim.scenario import DeviceKind, EventKind, Scenario, load_scenario
from wardwatch.gateway.app import Gateway
from wardwatch.gateway.config import DeviceBinding, GatewayConfig, QueueSettings

pytestmark = pytest.mark.slow

SPEED: Final = 50.0  # scenario seconds per real second
TIMEOUT: Final = 20.0
GATEWAY: Final = "gw-01"
SettingsFor = Callable[..., MqttSettings]
Collect = Callable[..., Any]  # tests/gateway/conftest.py: collecting()

BLE: Final = msgspec.structs.replace(FAST_BLE, scan_window_s=0.5, seen_ttl_s=2.0, backoff_max_s=0.3)
_SPOT_FLAGS: Final = {Quality.DEVICE_CLOCK, Quality.DEVICE_CLOCK_UNSET}


def compact(
    scenario: Scenario, *, lead: float = 20, gap: float = 20, max_hold: float = 60, tail: float = 30
) -> Scenario:
    """The scenario with each patient's events back to back (order, kinds and ramps kept; holds capped)."""
    patients = []
    end = 0.0
    for patient in scenario.patients:
        at = lead
        events = []
        for event in sorted(patient.events, key=lambda e: e.at):
            moved = msgspec.structs.replace(event, at=at, duration=min(event.duration, max_hold))
            events.append(moved)
            at = moved.end + gap
        end = max(end, at - gap)
        patients.append(msgspec.structs.replace(patient, events=events))
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return msgspec.structs.replace(scenario, patients=patients, duration=end + tail, start=start)


@dataclass
class Played:
    """A scenario being played: its tracks, devices, and which notifications each device delivered."""

    scenario: Scenario
    tracks: dict[str, Track]
    devices: dict[str, SimulatedDevice]
    delivered: dict[str, list[int]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def devices_of(scenario: Scenario, radio: SimRadio) -> AsyncIterator[Played]:
    """Power on the scenario's devices; ``start(played)`` plays the tracks (runner's ``play``, at ``SPEED``)."""
    tracks = {t.device.id: t for t in simulate(scenario)}
    async with contextlib.AsyncExitStack() as stack:
        devices = {
            did: await stack.enter_async_context(make_device(t.device, radio, advertising_interval_ms=50))
            for did, t in tracks.items()
        }
        yield Played(scenario, tracks, devices, {did: [] for did in tracks})


async def play_all(played: Played) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with asyncio.TaskGroup() as group:
        for did, track in played.tracks.items():

            def record(i: int, sent: bool, did: str = did) -> None:
                if sent:
                    played.delivered[did].append(i)

            group.create_task(play(played.devices[did], track, t0=t0, speed=SPEED, on_sent=record))
    played.done.set()


def bindings(played: Played) -> tuple[DeviceBinding, ...]:
    out = []
    for did, track in played.tracks.items():
        strap = track.device.kind == DeviceKind.HEART_RATE_STRAP
        role = DeviceRole.HEART_RATE_STRAP if strap else DeviceRole.PULSE_OXIMETER
        out.append(DeviceBinding(id=did, patient=track.patient.id, role=role, address=played.devices[did].address))
    return tuple(out)


@asynccontextmanager
async def gateway_for(
    played: Played, settings: MqttSettings, tmp_path: Path, selected: BleakArguments
) -> AsyncIterator[Gateway]:
    config = GatewayConfig(
        gateway_id=GATEWAY,
        ward=played.scenario.ward,
        mqtt=settings,
        devices=bindings(played),
        ble=BLE,
        # one message per signal and notification: the checks below pair each notification with the model's
        queue=QueueSettings(path=tmp_path / "queue.sqlite3", commit_interval_s=0.05, batch_vitals=False),
        status_interval_s=0.5,
        device_timezone="UTC",  # the simulated device clocks run in UTC
    )
    async with running_gateway(config, selected) as gateway:
        yield gateway


# --- what arrived -------------------------------------------------------------------------------


def arrived(sub: Any, device: str) -> list[Vitals]:
    """The device's vitals, deduplicated by ``seq``, in ``seq`` order."""
    by_seq: dict[int, Vitals] = {}
    for v in sub.vitals():
        if v.device == device:
            by_seq.setdefault(v.seq, v)
    return [by_seq[s] for s in sorted(by_seq)]


def statuses(sub: Any, device: str) -> list[DeviceStatus]:
    """The device's status messages with a reason (not the periodic ones), deduplicated, in ``seq`` order."""
    by_seq: dict[int, DeviceStatus] = {}
    for m in sub.on("wardwatch/v1/device/"):
        s = decode(m.payload)
        if isinstance(s, DeviceStatus) and s.device == device and s.reason is not None and s.seq is not None:
            by_seq.setdefault(s.seq, s)
    return [by_seq[s] for s in sorted(by_seq)]


def strap_notifications(messages: list[Vitals]) -> list[tuple[Vitals, Vitals | None]]:
    """(heart rate, RR intervals or None) per 0x2A37 notification."""
    out: list[tuple[Vitals, Vitals | None]] = []
    for v in messages:
        if v.signal == Signal.HEART_RATE:
            out.append((v, None))
        else:
            assert v.signal == Signal.RR_INTERVAL
            assert out
            assert out[-1][1] is None
            out[-1] = (out[-1][0], v)
    return out


def oximeter_notifications(messages: list[Vitals]) -> tuple[list[list[Vitals]], list[list[Vitals]]]:
    """(continuous, spot-check) notifications: SpO2, pulse rate, perfusion index messages each."""
    continuous: list[list[Vitals]] = []
    spots: list[list[Vitals]] = []
    for v in messages:
        kind = spots if _SPOT_FLAGS & set(v.samples[0].q) else continuous
        if v.signal == Signal.SPO2:
            kind.append([v])
        else:
            assert kind
            kind[-1].append(v)
    for group in continuous + spots:
        assert [v.signal for v in group] == [Signal.SPO2, Signal.PULSE_RATE, Signal.PERFUSION_INDEX]
    return continuous, spots


def all_arrived(played: Played, sub: Any, did: str) -> bool:
    """Whether every notification the device delivered, and every spot-check not left on it, arrived."""
    track, device = played.tracks[did], played.devices[did]
    messages = arrived(sub, did)
    if isinstance(track, StrapTrack):
        return sum(v.signal == Signal.HEART_RATE for v in messages) >= len(played.delivered[did])
    assert isinstance(track, OximeterTrack)
    assert isinstance(device, PulseOximeter)
    try:
        continuous, spots = oximeter_notifications(messages)
    except AssertionError:  # a notification's three messages part-way here: not yet (the final check is strict)
        return False
    taken = sum(s.index < track.seconds for s in track.spot_checks)
    return len(continuous) >= len(played.delivered[did]) and len(spots) >= taken - len(device.stored)


# --- comparison with the model --------------------------------------------------------------------


def check_strap(track: StrapTrack, delivered: list[int], messages: list[Vitals]) -> None:
    notifications = strap_notifications(messages)
    assert len(notifications) == len(delivered)
    for i, (hr, rr) in zip(delivered, notifications, strict=True):
        reading = track.reading(i)
        (sample,) = hr.samples
        if reading.contact:
            assert (sample.v, sample.q, sample.absent) == (float(reading.heart_rate), (), None), f"reading {i}"
        else:
            assert (sample.v, sample.q, sample.absent) == (None, (Quality.CONTACT_LOST,), AbsentReason.UNAVAILABLE)
        if reading.rr_ticks:
            assert rr is not None, f"reading {i}: RR intervals missing"
            assert [s.v for s in rr.samples] == [ticks / 1024 for ticks in reading.rr_ticks]
            assert [s.t for s in rr.samples] == sorted({s.t for s in rr.samples})
        else:
            assert rr is None


def check_oximeter(track: OximeterTrack, delivered: list[int], continuous: list[list[Vitals]]) -> None:
    assert len(continuous) == len(delivered)
    for i, group in zip(delivered, continuous, strict=True):
        reading = track.reading(i)
        flags = plx_quality(reading.measurement_status, reading.device_sensor_status)
        pai = None if reading.pai_tenths is None else reading.pai_tenths / 10
        expected = (reading.spo2, reading.pulse_rate, pai)
        for v, value in zip(group, expected, strict=True):
            (sample,) = v.samples
            assert sample.q == flags, f"reading {i} {v.signal}"
            if value is None:
                assert (sample.v, sample.absent) == (None, AbsentReason.NAN), f"reading {i} {v.signal}"
            else:
                assert (sample.v, sample.absent) == (float(value), None), f"reading {i} {v.signal}"
        assert len({v.samples[0].t for v in group}) == 1  # one notification, one time


def check_spot_checks(track: OximeterTrack, device: PulseOximeter, spots: list[list[Vitals]], backfilled: int) -> None:
    played = [s for s in track.spot_checks if s.index < track.seconds]
    still_stored = {id(s) for s in device.stored}
    expected = [s for s in played if id(s) not in still_stored]
    assert len(spots) == len(expected)
    assert sum(Quality.FROM_STORAGE in g[0].samples[0].q for g in spots) == backfilled
    got = sorted((g[0].samples[0].v, g[1].samples[0].v, g[2].samples[0].v) for g in spots)
    assert got == sorted((float(s.spo2), float(s.pulse_rate), s.pai_tenths / 10) for s in expected)
    for group in spots:
        q = group[0].samples[0].q
        if Quality.DEVICE_CLOCK in q:  # the device's own time (naive, UTC here)
            times = {
                round(s.device_time.replace(microsecond=0, tzinfo=dt.UTC).timestamp() * 1000)  # whole s on the wire
                for s in expected
                if s.clock_set and float(s.spo2) == group[0].samples[0].v
            }
            assert group[0].samples[0].t in times


# --- the runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one scenario run produced."""

    played: Played
    gateway: Gateway
    sub: Any


@asynccontextmanager
async def scenario_run(
    name: str, mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> AsyncIterator[Run]:
    """Play the compacted scenario ``name`` to its end and let everything arrive; then check it all."""
    scenario = compact(load_scenario(name))
    settings = settings_for(mosquitto)
    radio = SimRadio()
    async with (
        devices_of(scenario, radio) as played,
        BumbleCentral(radio) as central,
        collect(settings, "wardwatch/v1/#") as sub,
        gateway_for(played, settings, tmp_path, bleak_arguments(central)) as gateway,
    ):
        for device in played.devices.values():
            main = gatt.PLX_CONTINUOUS_MEASUREMENT if isinstance(device, PulseOximeter) else gatt.HEART_RATE_MEASUREMENT
            await device.wait_subscribed(main, TIMEOUT)
        await asyncio.wait_for(play_all(played), scenario.duration / SPEED + 30)
        for did in played.tracks:
            await wait_for(partial(all_arrived, played, sub, did), TIMEOUT, what=f"everything of {did}")
        sessions = {s.binding.id: s for s in gateway.sessions}
        await wait_for(lambda: gateway.queue is not None and gateway.queue.depth == 0, TIMEOUT, what="drained")
        run = Run(played, gateway, sub)
        check_everything(run, sessions)
        yield run


def check_everything(run: Run, sessions: dict[str, Any]) -> None:
    played, sub = run.played, run.sub
    for did, track in played.tracks.items():
        messages = arrived(sub, did)
        assert [v.seq for v in messages] == list(range(len(messages))), f"{did}: gap in sequence numbers"
        assert played.delivered[did], f"{did}: nothing delivered"
        if isinstance(track, StrapTrack):
            check_strap(track, played.delivered[did], messages)
        else:
            assert isinstance(track, OximeterTrack)
            device = played.devices[did]
            assert isinstance(device, PulseOximeter)
            continuous, spots = oximeter_notifications(messages)
            check_oximeter(track, played.delivered[did], continuous)
            check_spot_checks(track, device, spots, sessions[did].backfilled)
        seqs = [s.seq for s in statuses(sub, did)]
        assert seqs == sorted(seqs)


def samples_of(run: Run, kind: DeviceKind) -> list[Any]:
    return [
        s
        for did, track in run.played.tracks.items()
        if track.device.kind == kind
        for v in arrived(run.sub, did)
        for s in v.samples
    ]


def link_windows(track: Track, mask: Any) -> int:
    """Number of separate windows in which ``mask`` (per second) is true."""
    values = [bool(x) for x in mask]
    return sum(1 for i, x in enumerate(values) if x and (i == 0 or not values[i - 1]))


def device_of(run: Run, kind: DeviceKind) -> tuple[str, Track]:
    return next((did, t) for did, t in run.played.tracks.items() if t.device.kind == kind)


# --- one test per named scenario ------------------------------------------------------------------


async def test_out_of_range_drops_reconnects_and_backfills(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    async with scenario_run("out-of-range", mosquitto, tmp_path, settings_for, collect) as run:
        sessions = {s.binding.id: s for s in run.gateway.sessions}
        for did, track in run.played.tracks.items():
            windows = link_windows(track, ~track.in_range)
            assert windows == 2
            lost = [s for s in statuses(run.sub, did) if not s.connected]
            assert len(lost) == windows
            assert {s.reason for s in lost} == {"link_lost"}
            assert sessions[did].connects == windows + 1
            assert not any(not track.in_range[i] for i in run.played.delivered[did])  # nothing heard out of range
        oximeter_id, _ = device_of(run, DeviceKind.PULSE_OXIMETER)
        assert sessions[oximeter_id].backfilled >= 1  # spot-checks stored while away, fetched after


async def test_busy_strap_is_refused_then_reconnected(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    async with scenario_run("busy", mosquitto, tmp_path, settings_for, collect) as run:
        strap_id, strap_track = device_of(run, DeviceKind.HEART_RATE_STRAP)
        strap = run.played.devices[strap_id]
        assert link_windows(strap_track, strap_track.busy) == 1
        assert strap.refused_total >= 1  # the gateway kept trying while the phone held it
        session = next(s for s in run.gateway.sessions if s.binding.id == strap_id)
        assert session.connects == 2
        assert [s.connected for s in statuses(run.sub, strap_id) if s.reason != "battery"] == [True, False, True]
        assert not any(strap_track.busy[i] for i in run.played.delivered[strap_id])
        oximeter_id, _ = device_of(run, DeviceKind.PULSE_OXIMETER)
        oximeter = next(s for s in run.gateway.sessions if s.binding.id == oximeter_id)
        assert oximeter.connects == 1  # the other device is not disturbed


async def test_low_battery_is_reported_and_the_dead_strap_disconnects(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    async with scenario_run("low-battery", mosquitto, tmp_path, settings_for, collect) as run:
        strap_id, strap_track = device_of(run, DeviceKind.HEART_RATE_STRAP)
        reports = [s for s in statuses(run.sub, strap_id) if s.reason == "battery"]
        levels = [s.battery for s in reports if s.battery is not None]
        assert len(levels) == len(reports) >= 10
        assert levels == sorted(levels, reverse=True)  # draining
        assert set(levels) <= set(strap_track.battery.tolist())
        assert min(levels) <= 5
        final = statuses(run.sub, strap_id)[-1]
        assert (final.connected, final.reason) == (False, "link_lost")  # switched off at 0 %
        assert not strap_track.powered[-1]
        session = next(s for s in run.gateway.sessions if s.binding.id == strap_id)
        assert not session.connected


async def test_sensor_off_becomes_absent_values_with_flags(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    async with scenario_run("sensor-off", mosquitto, tmp_path, settings_for, collect) as run:
        hr = samples_of(run, DeviceKind.HEART_RATE_STRAP)
        assert sum(Quality.CONTACT_LOST in s.q and s.v is None for s in hr) >= 20
        ox = samples_of(run, DeviceKind.PULSE_OXIMETER)
        off = [s for s in ox if s.absent == AbsentReason.NAN]
        assert len(off) >= 3 * 20
        assert all({Quality.UNAVAILABLE, Quality.SENSOR_UNCONNECTED} <= set(s.q) for s in off)
        for session in run.gateway.sessions:
            assert session.connects == 1  # a loose sensor is no link problem


async def test_oximeter_status_flags_become_quality_flags(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    async with scenario_run("oximeter-flags", mosquitto, tmp_path, settings_for, collect) as run:
        seen = {q for s in samples_of(run, DeviceKind.PULSE_OXIMETER) for q in s.q}
        assert {Quality.QUESTIONABLE, Quality.INVALID, Quality.LOW_PERFUSION, Quality.SENSOR_DISPLACED} <= seen


async def test_motion_artefacts_arrive_as_the_devices_flagged_them(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    async with scenario_run("motion", mosquitto, tmp_path, settings_for, collect) as run:
        ox = samples_of(run, DeviceKind.PULSE_OXIMETER)
        assert any(s.q for s in ox)  # some flagged ...
        assert sum(not s.q for s in ox) > len(ox) / 2  # ... most not: values jump yet look valid
        event = next(e for p in run.played.scenario.patients for e in p.events if e.kind == EventKind.MOTION)
        assert event.at == 20


async def test_sudden_desaturation_values_arrive_unchanged(
    mosquitto: Mosquitto, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    async with scenario_run("desaturation-sudden", mosquitto, tmp_path, settings_for, collect) as run:
        spo2 = [
            s.v
            for did, track in run.played.tracks.items()
            if isinstance(track, OximeterTrack)
            for v in arrived(run.sub, did)
            if v.signal == Signal.SPO2
            for s in v.samples
            if s.v is not None
        ]
        assert min(spo2) <= 80
        assert max(spo2) >= 94
