"""The physiology and device model: pure, deterministic (seeded numpy), vectorised.

:func:`simulate` turns a :class:`~wardwatch.firmware_sim.scenario.Scenario` into one
:class:`StrapTrack` or :class:`OximeterTrack` per device: per-second arrays of what the device's
firmware reports (values already quantised as the GATT encoders will carry them, and flags),
plus the link state. The same tracks feed ``sim render`` (offline) and the live BLE devices, so
the ground truth (:mod:`wardwatch.firmware_sim.groundtruth`) is shared.

Notification ``i`` of a device is sent at ``start + (i + 1)`` seconds and covers the second before.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from wardwatch.core.gatt import (
    DeviceSensorStatus,
    HeartRateMeasurement,
    MeasurementStatus,
    MedFloat,
    PlxContinuousMeasurement,
    PlxSpotCheckMeasurement,
)
from wardwatch.core.gatt.ieee11073 import AbsentReason

from .errors import SimError
from .scenario import SPOT_CHECK_KINDS, DeviceKind, DeviceSpec, EventKind, EventSpec, PatientSpec, Scenario

__all__ = [
    "DEVICE_EPOCH",
    "HeartRateReading",
    "OximeterReading",
    "OximeterTrack",
    "PatientPhysiology",
    "SpotCheck",
    "StrapTrack",
    "Track",
    "envelope",
    "simulate",
    "simulate_patient",
]

FArray = npt.NDArray[np.float64]
IArray = npt.NDArray[np.int64]
BArray = npt.NDArray[np.bool_]

DEVICE_EPOCH: Final = dt.datetime(2000, 1, 1)  # an unset device clock counts from here
_FINE_DT: Final = 0.05  # s, grid for beat generation
_HR_WINDOW_S: Final = 4.0  # strap firmware averages the RR of the last few seconds
_EARLY_ESTIMATE_S: Final = 5  # oximeter reports early estimates this long after the sensor goes on

MS = MeasurementStatus
DSS = DeviceSensorStatus


def envelope(t: FArray, event: EventSpec) -> FArray:
    """0..1 trapezoid: ramp up over ``onset``, hold for ``duration``, ramp down over ``recovery``."""
    a = event.at
    b = a + event.onset
    c = b + event.duration
    d = c + event.recovery
    up = np.clip((t - a) / event.onset, 0.0, 1.0) if event.onset > 0 else (t >= a).astype(np.float64)
    down = np.clip((d - t) / event.recovery, 0.0, 1.0) if event.recovery > 0 else (t < c).astype(np.float64)
    env: FArray = np.minimum(up, down)
    env[(t < a) | (t >= d)] = 0.0
    return env


def window(t: FArray, event: EventSpec) -> BArray:
    """True for the seconds an on/off event (sensor off, out of range, ...) is active."""
    return (t >= event.at) & (t < event.end)


@dataclass(frozen=True, slots=True)
class PatientPhysiology:
    """The patient's true physiology at 1 Hz and their beat times (s since scenario start)."""

    t: FArray  # s, second index i covers (i, i+1]
    hr: FArray  # true heart rate, bpm
    spo2: FArray  # true SpO2, %
    pai: FArray  # true perfusion, %
    beats: FArray  # R-peak times, s


@dataclass(frozen=True, slots=True)
class SpotCheck:
    """One stored/indicated spot-check measurement."""

    index: int  # the second it was taken (notification index)
    spo2: int
    pulse_rate: int
    pai_tenths: int
    device_time: dt.datetime  # what the device clock said (naive)
    clock_set: bool

    def to_gatt(self) -> PlxSpotCheckMeasurement:
        """The 0x2A5E value for this record."""
        return PlxSpotCheckMeasurement(
            spo2=MedFloat(self.spo2, 0),
            pulse_rate=MedFloat(self.pulse_rate, 0),
            timestamp=self.device_time.replace(microsecond=0),
            measurement_status=MS.validated_data,
            device_sensor_status=DSS(0),
            pulse_amplitude_index=MedFloat(self.pai_tenths, -1),
            device_clock_not_set=not self.clock_set,
        )


@dataclass(frozen=True, slots=True)
class HeartRateReading:
    """What a strap notifies in one second."""

    index: int
    t_ms: int
    heart_rate: int
    contact: bool
    rr_ticks: tuple[int, ...]
    battery: int

    def to_gatt(self) -> HeartRateMeasurement:
        """The 0x2A37 value."""
        return HeartRateMeasurement(self.heart_rate, self.contact, None, self.rr_ticks)


@dataclass(frozen=True, slots=True)
class OximeterReading:
    """What an oximeter notifies in one second (``None`` values are sent as NaN)."""

    index: int
    t_ms: int
    spo2: int | None
    pulse_rate: int | None
    pai_tenths: int | None
    measurement_status: MeasurementStatus
    device_sensor_status: DeviceSensorStatus
    battery: int

    def to_gatt(self) -> PlxContinuousMeasurement:
        """The 0x2A5F value."""
        nan = MedFloat.absent(AbsentReason.nan)
        return PlxContinuousMeasurement(
            spo2=nan if self.spo2 is None else MedFloat(self.spo2, 0),
            pulse_rate=nan if self.pulse_rate is None else MedFloat(self.pulse_rate, 0),
            measurement_status=self.measurement_status,
            device_sensor_status=self.device_sensor_status,
            pulse_amplitude_index=nan if self.pai_tenths is None else MedFloat(self.pai_tenths, -1),
        )


@dataclass(slots=True)
class Track:
    """Per-second state of one device. ``connected`` = powered, in range and not held by another central."""

    patient: PatientSpec
    device: DeviceSpec
    start_ms: int
    battery: IArray
    powered: BArray
    in_range: BArray
    busy: BArray

    @property
    def seconds(self) -> int:
        """Number of notifications (seconds) in the track."""
        return len(self.battery)

    @property
    def connected(self) -> BArray:
        """Whether a gateway can hold a link to the device in each second."""
        result: BArray = self.powered & self.in_range & ~self.busy
        return result

    def t_ms(self, index: int) -> int:
        """Send time of notification ``index`` (ms since the epoch)."""
        return self.start_ms + (index + 1) * 1000


@dataclass(slots=True)
class StrapTrack(Track):
    """A heart-rate strap's notifications: HR (0 without contact), contact, RR ticks (1/1024 s)."""

    hr: IArray = field(default_factory=lambda: np.zeros(0, np.int64))
    contact: BArray = field(default_factory=lambda: np.zeros(0, np.bool_))
    rr_ticks: IArray = field(default_factory=lambda: np.zeros(0, np.int64))
    rr_offsets: IArray = field(default_factory=lambda: np.zeros(1, np.int64))  # RR of second i: [off[i], off[i+1])

    def reading(self, index: int) -> HeartRateReading:
        """Notification ``index`` as a value object."""
        a, b = int(self.rr_offsets[index]), int(self.rr_offsets[index + 1])
        return HeartRateReading(
            index,
            self.t_ms(index),
            int(self.hr[index]),
            bool(self.contact[index]),
            tuple(int(x) for x in self.rr_ticks[a:b]),
            int(self.battery[index]),
        )

    def readings(self) -> Iterator[HeartRateReading]:
        """Every notification in order (whether or not the link is up)."""
        for i in range(self.seconds):
            yield self.reading(i)


@dataclass(slots=True)
class OximeterTrack(Track):
    """A pulse oximeter's continuous notifications and spot-checks (NaN = absent)."""

    spo2: FArray = field(default_factory=lambda: np.zeros(0))
    pulse_rate: FArray = field(default_factory=lambda: np.zeros(0))
    pai_tenths: FArray = field(default_factory=lambda: np.zeros(0))
    measurement_status: IArray = field(default_factory=lambda: np.zeros(0, np.int64))
    device_sensor_status: IArray = field(default_factory=lambda: np.zeros(0, np.int64))
    spot_checks: list[SpotCheck] = field(default_factory=list)

    def reading(self, index: int) -> OximeterReading:
        """Notification ``index`` as a value object."""

        def opt(a: FArray) -> int | None:
            v = float(a[index])
            return None if math.isnan(v) else int(v)

        return OximeterReading(
            index,
            self.t_ms(index),
            opt(self.spo2),
            opt(self.pulse_rate),
            opt(self.pai_tenths),
            MS(int(self.measurement_status[index])),
            DSS(int(self.device_sensor_status[index])),
            int(self.battery[index]),
        )

    def readings(self) -> Iterator[OximeterReading]:
        """Every notification in order (whether or not the link is up)."""
        for i in range(self.seconds):
            yield self.reading(i)


# --- physiology ---------------------------------------------------------------------------------


def _ar1(rng: np.random.Generator, n: int, sd: float, tau_s: float) -> FArray:
    """Stationary AR(1) noise with standard deviation ``sd`` and time constant ``tau_s`` (1 Hz)."""
    if n == 0 or sd == 0:
        return np.zeros(n)
    from scipy.signal import lfilter  # here, not at module level: importing the devices stays cheap

    phi = math.exp(-1.0 / tau_s)
    white = rng.standard_normal(n) * sd * math.sqrt(1 - phi * phi)
    white[0] = rng.standard_normal() * sd
    out: FArray = lfilter([1.0], [1.0, -phi], white)
    return out


def _physiology(scenario: Scenario, patient: PatientSpec, rng: np.random.Generator) -> PatientPhysiology:
    n = math.ceil(scenario.duration)
    t = np.arange(n, dtype=np.float64) + 1.0  # value at the end of each second
    base = patient.baseline
    hr = base.hr + _ar1(rng, n, base.hr_drift_sd, 120.0)
    spo2 = base.spo2 + _ar1(rng, n, base.spo2_noise_sd, 20.0)
    pai = base.pai * np.exp(_ar1(rng, n, 0.08, 60.0))
    for event in patient.events:
        if event.kind in {EventKind.TACHYCARDIA, EventKind.BRADYCARDIA}:
            assert event.target is not None
            # the arrhythmia takes over the rate: drift fades out as the event sets in
            hr += envelope(t, event) * (event.target - hr)
        elif event.kind in {EventKind.DESATURATION, EventKind.BRIEF_DIP}:
            target = event.target if event.target is not None else 86.0
            drop = envelope(t, event) * (base.spo2 - target)
            spo2 -= drop
            hr += 0.3 * drop  # hypoxaemia drives the heart rate up a little
    hr = np.clip(hr, 25.0, 250.0)
    spo2 = np.clip(spo2, 50.0, 100.0)
    # beats: integrate the instantaneous rate (with respiratory sinus arrhythmia) on a fine grid
    fine = np.arange(0.0, n + _FINE_DT, _FINE_DT)
    rate = np.interp(fine, np.concatenate(([0.0], t)), np.concatenate(([hr[0]], hr))) / 60.0
    rate *= 1.0 + base.hrv * np.sin(2 * math.pi * base.resp_rate / 60.0 * fine)
    phase = np.concatenate(([0.0], np.cumsum(rate[:-1] * _FINE_DT))) + rng.uniform(0, 1)
    k = np.arange(math.ceil(phase[0]), math.floor(phase[-1]) + 1, dtype=np.float64)
    beats = np.interp(k, phase, fine) + rng.normal(0.0, 0.006, k.size)
    beats = np.sort(beats[(beats > 0) & (beats < n)])
    return PatientPhysiology(t, hr, spo2, pai, beats)


# --- devices ------------------------------------------------------------------------------------


def _applies(event: EventSpec, device: DeviceSpec) -> bool:
    return event.device is None or event.device == device.id


def _link_state(
    scenario: Scenario, patient: PatientSpec, device: DeviceSpec, t: FArray
) -> tuple[IArray, BArray, BArray, BArray]:
    battery = device.battery - device.battery_drain_per_hour * t / 3600.0
    for event in patient.events:
        if event.kind == EventKind.BATTERY_DRAIN and _applies(event, device):
            target = event.target if event.target is not None else 0.0
            at_start = device.battery - device.battery_drain_per_hour * event.at / 3600.0
            ramp = np.clip((t - event.at) / max(event.duration, 1.0), 0.0, 1.0)
            battery -= ramp * max(at_start - target, 0.0)
    battery = np.clip(battery, 0.0, 100.0)
    powered = np.logical_and.accumulate(battery > 0.0)
    in_range = np.ones(t.size, np.bool_)
    busy = np.zeros(t.size, np.bool_)
    for event in patient.events:
        if not _applies(event, device):
            continue
        if event.kind == EventKind.OUT_OF_RANGE:
            in_range &= ~window(t, event)
        elif event.kind == EventKind.BUSY:
            busy |= window(t, event)
    return np.ceil(battery).astype(np.int64), powered, in_range, busy


def _strap(
    scenario: Scenario, patient: PatientSpec, device: DeviceSpec, phys: PatientPhysiology, rng: np.random.Generator
) -> StrapTrack:
    t = phys.t
    n = t.size
    battery, powered, in_range, busy = _link_state(scenario, patient, device, t)
    beats = phys.beats
    rr = np.diff(beats)
    ends = beats[1:]  # RR interval i ends at beat i+1
    contact = np.ones(n, np.bool_)
    motion = np.zeros(n)
    for event in patient.events:
        if not _applies(event, device):
            continue
        if event.kind == EventKind.SENSOR_OFF:
            contact &= ~window(t, event)
        elif event.kind == EventKind.MOTION:
            motion = np.maximum(motion, window(t, event) * float(np.clip(event.severity, 0.0, 1.0)))
    # spurious beats during motion (the strap's detector triggers on movement)
    second_of = np.minimum(np.floor(ends).astype(np.int64), n - 1)
    extra_sec = np.flatnonzero(rng.uniform(size=n) < motion * 0.6)
    extra_t = extra_sec + rng.uniform(0.0, 1.0, extra_sec.size)
    extra_rr = rng.uniform(0.25, 0.45, extra_sec.size)
    all_t = np.concatenate((ends, extra_t))
    all_rr = np.concatenate((rr, extra_rr))
    order = np.argsort(all_t, kind="stable")
    all_t, all_rr = all_t[order], all_rr[order]
    second_of = np.minimum(np.floor(all_t).astype(np.int64), n - 1)
    keep = contact[second_of]
    all_t, all_rr = all_t[keep], all_rr[keep]
    ticks = np.rint(all_rr * 1024).astype(np.int64)
    offsets = np.searchsorted(all_t, np.arange(n + 1, dtype=np.float64), side="left").astype(np.int64)
    # firmware HR: mean rate over the RR intervals that ended in the last few seconds
    cum = np.concatenate(([0.0], np.cumsum(ticks / 1024.0)))
    hi = offsets[1:]
    lo = np.searchsorted(all_t, t - _HR_WINDOW_S, side="left")
    count = hi - lo
    total = cum[hi] - cum[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        hr = np.where(count > 0, 60.0 * count / np.where(total > 0, total, 1.0), np.nan)
    hr = _fill_forward(hr, float(patient.baseline.hr))
    jumps = (rng.uniform(size=n) < motion * 0.5) * rng.choice([-1.0, 1.0], n) * rng.uniform(15, 45, n)
    hr = np.clip(np.rint(hr + jumps), 0, 255).astype(np.int64)
    hr[~contact] = 0
    return StrapTrack(patient, device, scenario.start_ms, battery, powered, in_range, busy, hr, contact, ticks, offsets)


def _fill_forward(values: FArray, initial: float) -> FArray:
    bad = np.isnan(values)
    if not bad.any():
        return values
    idx = np.where(~bad, np.arange(values.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = values[idx]
    out[np.isnan(out)] = initial
    return out


def _oximeter(
    scenario: Scenario, patient: PatientSpec, device: DeviceSpec, phys: PatientPhysiology, rng: np.random.Generator
) -> OximeterTrack:
    t = phys.t
    n = t.size
    battery, powered, in_range, busy = _link_state(scenario, patient, device, t)
    spo2 = phys.spo2.copy()
    pr = phys.hr + rng.normal(0.0, 0.8, n)
    pai = phys.pai.copy()
    ms = np.zeros(n, np.int64)
    dss = np.zeros(n, np.int64)
    off = np.zeros(n, np.bool_)
    for event in patient.events:
        if not _applies(event, device):
            continue
        w = window(t, event)
        k = int(w.sum())
        if k == 0:
            continue
        if event.kind == EventKind.SENSOR_OFF:
            off |= w
        elif event.kind == EventKind.MOTION:
            sev = float(np.clip(event.severity, 0.0, 1.0))
            hit = w & (rng.uniform(size=n) < sev * 0.5)
            spo2[hit] -= rng.uniform(0, 12 * sev, int(hit.sum()))
            jump = w & (rng.uniform(size=n) < sev * 0.5)
            pr[jump] += rng.choice([-1.0, 1.0], int(jump.sum())) * rng.uniform(10, 40, int(jump.sum()))
            flagged = w & (rng.uniform(size=n) < 0.3 * sev)
            ms[flagged] |= MS.questionable_measurement_detected
            dss[flagged] |= DSS.erratic_signal_detected
        elif event.kind == EventKind.SENSOR_DISPLACED:
            spo2[w] -= rng.uniform(3, 10, k)
            pr[w] += rng.normal(0, 6, k)
            ms[w] |= MS.questionable_measurement_detected
            dss[w] |= DSS.sensor_displaced | DSS.questionable_pulse_detected
        elif event.kind == EventKind.LOW_PERFUSION:
            pai[w] = rng.uniform(0.2, 0.4, k)
            spo2[w] += rng.normal(0, 1.5, k)
            dss[w] |= DSS.low_perfusion_detected
            ms[w & (rng.uniform(size=n) < 0.5)] |= MS.questionable_measurement_detected
        elif event.kind == EventKind.QUESTIONABLE:
            ms[w] |= MS.questionable_measurement_detected
            dss[w] |= DSS.poor_signal_detected
        elif event.kind == EventKind.INVALID:
            spo2[w] = rng.uniform(70, 100, k)
            ms[w] |= MS.invalid_measurement_detected
            dss[w] |= DSS.signal_processing_irregularity_detected
    # early estimates for the first seconds after the sensor goes on
    on = ~off
    starts = np.flatnonzero(on & ~np.concatenate(([False], on[:-1])))
    for s in starts:
        ms[s : s + _EARLY_ESTIMATE_S] |= MS.early_estimated_data | MS.measurement_ongoing
    spo2 = np.clip(np.rint(spo2), 0, 100)
    pr = np.clip(np.rint(pr), 0, 300)
    pai_tenths = np.clip(np.rint(pai * 10), 1, 999)
    spo2[off] = np.nan
    pr[off] = np.nan
    pai_tenths[off] = np.nan
    ms[off] = MS.measurement_unavailable
    dss[off] = DSS.sensor_unconnected_to_user
    spots: list[SpotCheck] = []
    if device.spot_check_every > 0:
        every = max(1, round(device.spot_check_every))
        for i in range(every - 1, n, every):
            if off[i] or not powered[i]:
                continue
            elapsed = t[i]
            if device.clock == "set":
                wall = scenario.start + dt.timedelta(seconds=elapsed * (1 + device.clock_drift_ppm * 1e-6))
                device_time = wall.astimezone(dt.UTC).replace(tzinfo=None)
            else:
                device_time = DEVICE_EPOCH + dt.timedelta(seconds=elapsed)
            spots.append(SpotCheck(i, int(spo2[i]), int(pr[i]), int(pai_tenths[i]), device_time, device.clock == "set"))
    return OximeterTrack(
        patient, device, scenario.start_ms, battery, powered, in_range, busy, spo2, pr, pai_tenths, ms, dss, spots
    )


def simulate_patient(scenario: Scenario, patient: PatientSpec) -> tuple[PatientPhysiology, list[Track]]:
    """One patient's physiology and a track per device (deterministic for the scenario seed)."""
    seq = np.random.SeedSequence(scenario.patient_seed(patient))
    phys_seed, *device_seeds = seq.spawn(1 + len(patient.devices))
    phys = _physiology(scenario, patient, np.random.default_rng(phys_seed))
    tracks: list[Track] = []
    for device, seed in zip(patient.devices, device_seeds, strict=True):
        rng = np.random.default_rng(seed)
        if device.kind == DeviceKind.HEART_RATE_STRAP:
            tracks.append(_strap(scenario, patient, device, phys, rng))
        elif device.kind == DeviceKind.PULSE_OXIMETER:
            tracks.append(_oximeter(scenario, patient, device, phys, rng))
        elif device.kind in SPOT_CHECK_KINDS:
            from .spot_track import spot_track  # it builds on this module

            tracks.append(spot_track(scenario, patient, device, phys, rng))
        else:
            raise SimError(f"device {device.id!r}: {device.kind} is not modelled in scenario files")
    return phys, tracks


def simulate(scenario: Scenario) -> list[Track]:
    """Every device track of the scenario, in file order."""
    tracks: list[Track] = []
    for patient in scenario.patients:
        tracks.extend(simulate_patient(scenario, patient)[1])
    return tracks
