"""Spot-check scenarios with ground truth: hypotension and fever at home.

A patient with a blood-pressure cuff and a thermometer takes readings every few hours. Each
scenario is a seeded list of :class:`Reading` (what the patient does: values, faults, when) plus the
ground truth (:class:`~wardwatch.core.groundtruth.GroundTruthEvent`): which episodes a good alarm
system pages for. :func:`render` turns the readings into the wire messages the gateway would
publish, through the core profile table (the same codec and value -> samples path the gateway
runs); :func:`measurement` is the GATT value a simulated device sends for a reading.

* ``hypotension``: systolic 112-132 mmHg, one episode of two readings at 80-86 mmHg (pages), one
  reading at 66-72 mmHg taken with body movement and one at 150-160 mmHg with a loose cuff
  (artefacts: never page on their own), temperature 36.4-37.2 °C.
* ``fever``: temperature 36.4-37.2 °C, one episode of two readings at 39.3-39.8 °C (pages), one
  low-grade reading at 38.2-38.6 °C (clinical, does not page), blood pressure normal.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Final, Literal

from wardwatch.core.gatt import MedFloat
from wardwatch.core.gatt.blood_pressure import BloodPressureMeasurement, BloodPressureStatus, PulseRateRange
from wardwatch.core.gatt.thermometer import TemperatureMeasurement, TemperatureType
from wardwatch.core.groundtruth import GroundTruthEvent
from wardwatch.core.profiles import BLOOD_PRESSURE_CUFF, THERMOMETER, DeviceClock
from wardwatch.core.quality import ordered
from wardwatch.core.schema import Sample, Signal, Vitals

from .errors import SimError

__all__ = ["SPOT_SCENARIOS", "Reading", "SpotScenario", "render", "spot_scenario"]

SPOT_SCENARIOS: Final = ("hypotension", "fever")
EVERY_S: Final = 4 * 3600  # a reading of each kind every 4 hours
READINGS: Final = 12  # two days


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading the patient takes: ``kind`` cuff (systolic/diastolic mmHg) or thermometer (°C)."""

    t_ms: int
    kind: Literal["cuff", "thermometer"]
    values: tuple[float, ...]
    movement: bool = False
    cuff_loose: bool = False


@dataclass(slots=True)
class SpotScenario:
    """Readings in time order, the devices' ids and the ground truth."""

    name: str
    patient: str
    cuff: str
    thermometer: str
    readings: list[Reading] = field(default_factory=list)
    truth: list[GroundTruthEvent] = field(default_factory=list)


def spot_scenario(name: str, start: dt.datetime, *, seed: int = 1, patient: str = "p-spot") -> SpotScenario:
    """The scenario ``name`` (one of :data:`SPOT_SCENARIOS`) starting at ``start`` (aware)."""
    if name not in SPOT_SCENARIOS:
        raise SimError(f"unknown spot-check scenario {name!r}: choose one of {', '.join(SPOT_SCENARIOS)}")
    rng = random.Random(f"{name}:{seed}")
    t0 = int(start.timestamp() * 1000)
    scenario = SpotScenario(name, patient, f"bpc-{patient}", f"thm-{patient}")
    times = [t0 + i * EVERY_S * 1000 for i in range(READINGS)]
    episode = (5, 6)  # the 6th and 7th readings
    artefacts = {3: "movement", 9: "cuff_loose"} if name == "hypotension" else {}
    for i, t in enumerate(times):
        systolic = float(rng.randint(112, 132))
        movement = cuff_loose = False
        if name == "hypotension" and i in episode:
            systolic = float(rng.randint(80, 86))
        elif artefacts.get(i) == "movement":
            systolic, movement = float(rng.randint(66, 72)), True
        elif artefacts.get(i) == "cuff_loose":
            systolic, cuff_loose = float(rng.randint(150, 160)), True
        diastolic = float(round(systolic * rng.uniform(0.6, 0.68)))
        scenario.readings.append(Reading(t, "cuff", (systolic, diastolic), movement, cuff_loose))
        temperature = round(rng.uniform(36.4, 37.2), 1)
        if name == "fever" and i in episode:
            temperature = round(rng.uniform(39.3, 39.8), 1)
        elif name == "fever" and i == 9:
            temperature = round(rng.uniform(38.2, 38.6), 1)
        scenario.readings.append(Reading(t + 60_000, "thermometer", (temperature,)))
    first, last = episode
    episode_end = times[last + 1]
    if name == "hypotension":
        scenario.truth.append(_event(scenario, "hypotension", "clinical", times[first], episode_end, True))
        for i, what in artefacts.items():
            scenario.truth.append(_event(scenario, f"bp_{what}", "artefact", times[i], times[i] + 1, False))
    else:
        fever_start, fever_end = times[first] + 60_000, episode_end + 60_000
        scenario.truth.append(_event(scenario, "fever", "clinical", fever_start, fever_end, True, thermo=True))
        low_grade = times[9] + 60_000
        scenario.truth.append(
            _event(scenario, "low_grade_fever", "clinical", low_grade, low_grade + 1, False, thermo=True)
        )
    return scenario


def _event(
    s: SpotScenario,
    event: str,
    kind: Literal["clinical", "artefact"],
    start: int,
    end: int,
    page: bool,
    *,
    thermo: bool = False,
) -> GroundTruthEvent:
    device = s.thermometer if thermo else s.cuff
    return GroundTruthEvent(s.patient, event, kind, start, end, page, (device,), {"scenario": s.name})


def measurement(reading: Reading, when: dt.datetime) -> BloodPressureMeasurement | TemperatureMeasurement:
    """The GATT value a device sends for ``reading`` taken at ``when`` (naive device time)."""
    if reading.kind == "thermometer":
        (celsius,) = reading.values
        return TemperatureMeasurement(
            MedFloat.from_float(celsius, 1), timestamp=when, temperature_type=TemperatureType.armpit
        )
    systolic, diastolic = reading.values
    status = BloodPressureStatus(0)
    if reading.movement:
        status |= BloodPressureStatus.body_movement
    if reading.cuff_loose:
        status |= BloodPressureStatus.cuff_too_loose
    mean = diastolic + (systolic - diastolic) / 3
    return BloodPressureMeasurement(
        MedFloat.from_float(systolic, 0),
        MedFloat.from_float(diastolic, 0),
        MedFloat.from_float(mean, 0),
        timestamp=when,
        status=status,
        pulse_rate_range=PulseRateRange.within_range,
    )


def render(scenario: SpotScenario, *, gateway: str = "gw-01") -> list[Vitals]:
    """The vitals messages a gateway publishes for the readings (device clocks set, in UTC)."""
    clock = DeviceClock(dt.UTC)
    seq: dict[str, int] = {}
    out: list[Vitals] = []
    for reading in scenario.readings:
        when = dt.datetime.fromtimestamp(reading.t_ms / 1000, dt.UTC).replace(tzinfo=None)
        profile, device = (
            (THERMOMETER, scenario.thermometer)
            if reading.kind == "thermometer"
            else (BLOOD_PRESSURE_CUFF, scenario.cuff)
        )
        characteristic = next(c for c in profile.characteristics if c.samples is not None)
        value = characteristic.codec.decode(characteristic.codec.encode(measurement(reading, when)))
        assert characteristic.samples is not None
        m = characteristic.samples(value)
        t, flag = clock.resolve(m, reading.t_ms + 5_000)
        for point in m.points:
            quality = point.quality if flag is None else ordered((*point.quality, flag))
            n = seq[device] = seq.get(device, -1) + 1
            sample = Sample(t, point.value, quality, point.absent)
            out.append(
                Vitals(
                    patient=scenario.patient,
                    device=device,
                    gateway=gateway,
                    signal=point.signal,
                    seq=n,
                    samples=(sample,),
                )
            )
    return out


def signals_of(messages: list[Vitals], signal: Signal) -> list[float | None]:
    """The values of ``signal`` in ``messages`` (handy in tests and reports)."""
    return [m.samples[0].v for m in messages if m.signal == signal]
