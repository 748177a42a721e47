"""Blood-pressure cuffs and thermometers in scenario files: readings on a schedule, stored while away.

A spot-check device measures only when the patient takes a reading: every ``spot_check_every``
seconds from ``first_reading`` (one period in by default). :func:`spot_track` turns a scenario
device into a :class:`SpotTrack`: the readings (values as the GATT encoders carry them, the
patient's true value, the device's clock, artefact flags) and the link state every track has.

What a reading shows:

* cuff: systolic / diastolic mmHg from the patient's ``baseline.systolic`` / ``diastolic``, pulled
  towards the ``target`` systolic of a ``hypotension`` event (diastolic in proportion), with a few
  mmHg of measurement noise, and the pulse rate of the model's heart rate; a reading taken during
  ``motion`` (for this device) carries the body-movement bit and reads 30-45 % low; one during
  ``cuff_loose`` carries the cuff-fit bit and reads 20-40 mmHg high: artefacts that must not page;
* thermometer: ``baseline.temperature`` pulled towards the ``target`` of a ``fever`` or
  ``hypothermia`` event, ±0.1 °C noise, one decimal.

A reading taken while the device cannot reach the gateway (out of range, busy, gateway away) stays on
the device (``storage_capacity``, oldest overwritten) and is delivered, with its device timestamp, at
the next connection. With ``clock = "unset"`` the device counts from 2000-01-01, and the gateway stamps
the reading with its own time (flag ``device_clock_unset``; readings of one window 1 ms apart, as the
gateway stamps them). Offline, :func:`spot_messages` yields the
wire messages a gateway publishes for the readings, through the core profile table (the gateway's own
value -> samples path and :class:`~wardwatch.core.profiles.DeviceClock`).
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from wardwatch.core.gatt import MedFloat
from wardwatch.core.gatt.blood_pressure import BloodPressureMeasurement, BloodPressureStatus, PulseRateRange
from wardwatch.core.gatt.thermometer import TemperatureMeasurement, TemperatureType
from wardwatch.core.profiles import BLOOD_PRESSURE_CUFF, THERMOMETER, DeviceClock, Profile
from wardwatch.core.quality import ordered
from wardwatch.core.schema import Quality, Sample, Signal, Vitals

from .model import DEVICE_EPOCH, BArray, FArray, PatientPhysiology, Track, _link_state, envelope, window
from .scenario import DeviceKind, DeviceSpec, EventKind, PatientSpec, Scenario

__all__ = ["SpotReading", "SpotTrack", "spot_messages", "spot_track", "true_course"]

_BP_NOISE_MMHG: Final = 3.0
_TEMP_NOISE_C: Final = 0.1


@dataclass(frozen=True, slots=True)
class SpotReading:
    """One reading the patient takes, as the device measured it."""

    index: int  # the second it is taken (notification index of the track)
    values: tuple[float, ...]  # cuff: (systolic, diastolic, pulse); thermometer: (°C,)
    truth: float  # the patient's true systolic mmHg / temperature °C at that moment
    device_time: dt.datetime  # what the device clock says (naive)
    clock_set: bool
    movement: bool = False  # body movement during a cuff reading (status bit)
    cuff_loose: bool = False  # cuff fit too loose (status bit)

    @property
    def artefact(self) -> bool:
        """The device flagged the reading (movement, loose cuff): no evidence either way."""
        return self.movement or self.cuff_loose

    def to_gatt(
        self, kind: DeviceKind, when: dt.datetime | None = None
    ) -> BloodPressureMeasurement | TemperatureMeasurement:
        """The 0x2A35 / 0x2A1C value for this reading, stamped ``when`` (default: :attr:`device_time`)."""
        stamp = (when or self.device_time).replace(microsecond=0)
        if kind == DeviceKind.THERMOMETER:
            return TemperatureMeasurement(
                MedFloat.from_float(self.values[0], 1), timestamp=stamp, temperature_type=TemperatureType.armpit
            )
        systolic, diastolic, pulse = self.values
        status = BloodPressureStatus(0)
        if self.movement:
            status |= BloodPressureStatus.body_movement
        if self.cuff_loose:
            status |= BloodPressureStatus.cuff_too_loose
        return BloodPressureMeasurement(
            MedFloat.from_float(systolic, 0),
            MedFloat.from_float(diastolic, 0),
            MedFloat.from_float(round(diastolic + (systolic - diastolic) / 3), 0),
            timestamp=stamp,
            pulse_rate=MedFloat.from_float(pulse, 0),
            status=status,
            pulse_rate_range=PulseRateRange.within_range,
        )


@dataclass(slots=True)
class SpotTrack(Track):
    """A cuff's or thermometer's readings in time order, and its link state per second."""

    readings: list[SpotReading] = field(default_factory=list)

    @property
    def profile(self) -> Profile:
        """The core profile table's entry for this device."""
        return THERMOMETER if self.device.kind == DeviceKind.THERMOMETER else BLOOD_PRESSURE_CUFF


def _applies(kind: EventKind, event_device: str | None, device: DeviceSpec) -> bool:
    return event_device is None or event_device == device.id


def true_course(patient: PatientSpec, kind: DeviceKind, t: FArray) -> FArray:
    """The patient's true systolic mmHg (cuff) or temperature °C (thermometer) at times ``t`` (s)."""
    base = patient.baseline
    if kind == DeviceKind.THERMOMETER:
        course = np.full(t.size, base.temperature)
        for event in patient.events:
            if event.kind in {EventKind.FEVER, EventKind.HYPOTHERMIA} and event.target is not None:
                course += envelope(t, event) * (event.target - base.temperature)
        return course
    course = np.full(t.size, base.systolic)
    for event in patient.events:
        if event.kind == EventKind.HYPOTENSION and event.target is not None:
            course += envelope(t, event) * (event.target - base.systolic)
    return course


def spot_track(
    scenario: Scenario, patient: PatientSpec, device: DeviceSpec, phys: PatientPhysiology, rng: np.random.Generator
) -> SpotTrack:
    """The readings of a cuff or thermometer on its schedule (deterministic for ``rng``)."""
    t = phys.t
    n = t.size
    battery, powered, in_range, busy = _link_state(scenario, patient, device, t)
    every = max(1, round(device.spot_check_every))
    first = round(device.first_reading) - 1 if device.first_reading > 0 else every - 1
    indices = np.arange(max(first, 0), n, every)
    truth = true_course(patient, device.kind, t)
    movement = np.zeros(n, np.bool_)
    loose = np.zeros(n, np.bool_)
    for event in patient.events:
        if not _applies(event.kind, event.device, device):
            continue
        if event.kind == EventKind.MOTION:
            movement |= window(t, event)
        elif event.kind == EventKind.CUFF_LOOSE:
            loose |= window(t, event)
    readings: list[SpotReading] = []
    cuff = device.kind == DeviceKind.BLOOD_PRESSURE_CUFF
    for i in indices.tolist():
        if not powered[i]:
            continue
        if device.clock == "set":
            wall = scenario.start + dt.timedelta(seconds=float(t[i]) * (1 + device.clock_drift_ppm * 1e-6))
            device_time = wall.astimezone(dt.UTC).replace(tzinfo=None)
        else:
            device_time = DEVICE_EPOCH + dt.timedelta(seconds=float(t[i]))
        true_value = float(truth[i])
        if cuff:
            systolic = true_value + rng.normal(0.0, _BP_NOISE_MMHG)
            diastolic = patient.baseline.diastolic * true_value / patient.baseline.systolic + rng.normal(0.0, 2.0)
            moved, slack = bool(movement[i]), bool(loose[i])
            if moved:
                factor = rng.uniform(0.55, 0.7)
                systolic, diastolic = systolic * factor, diastolic * factor
            elif slack:
                systolic += rng.uniform(20.0, 40.0)
                diastolic += rng.uniform(10.0, 20.0)
            values: tuple[float, ...] = (
                float(round(systolic)),
                float(round(min(diastolic, systolic - 10))),
                float(round(phys.hr[i])),
            )
            readings.append(SpotReading(i, values, true_value, device_time, device.clock == "set", moved, slack))
        else:
            celsius = round(true_value + rng.normal(0.0, _TEMP_NOISE_C), 1)
            readings.append(SpotReading(i, (celsius,), true_value, device_time, device.clock == "set"))
    return SpotTrack(patient, device, scenario.start_ms, battery, powered, in_range, busy, readings)


def spot_messages(track: SpotTrack, order: int) -> Iterator[tuple[int, int, Vitals]]:
    """(publish time, device order, message) of a spot-check track, as the gateway publishes them.

    A reading is delivered in the second it is taken when the device can reach the gateway, else at the
    next second it can (the device keeps at most ``storage_capacity``, the oldest overwritten); sample
    times come from :class:`~wardwatch.core.profiles.DeviceClock` (device clocks run in UTC).
    """
    clock = DeviceClock(dt.UTC)
    characteristic = next(c for c in track.profile.characteristics if c.samples is not None)
    samples_of = characteristic.samples
    assert samples_of is not None
    connected: BArray = track.connected
    link = connected.tolist()
    patient, device = track.patient, track.device
    stored: deque[SpotReading] = deque(maxlen=max(1, device.storage_capacity))
    due = {r.index: r for r in track.readings}
    seq = 0
    last: dict[tuple[Signal, bool], int] = {}
    for i in range(track.seconds):
        reading = due.get(i)
        if reading is not None:
            stored.append(reading)
        if not link[i] or not stored:
            continue
        received = track.t_ms(i)
        while stored:
            reading = stored.popleft()
            value = characteristic.codec.decode(characteristic.codec.encode(reading.to_gatt(device.kind)))
            m = samples_of(value)
            t, flag = clock.resolve(m, received)
            for point in m.points:
                quality = point.quality if flag is None else ordered((*point.quality, flag))
                # like the gateway: strictly increasing times per signal and clock (readings of one window)
                series = (point.signal, flag is Quality.DEVICE_CLOCK)
                stamp = last[series] = max(t, last.get(series, -1) + 1)
                sample = Sample(stamp, point.value, quality, point.absent)
                message = Vitals(
                    patient=patient.id,
                    device=device.id,
                    gateway=patient.gateway_id,
                    signal=point.signal,
                    seq=seq,
                    samples=(sample,),
                )
                seq += 1
                yield received, order, message
