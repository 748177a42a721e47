"""A seeded synthetic scenario library with ground truth, for tests, scoring and the replay benchmark.

Each patient wears a chest strap (heart_rate, 1 Hz) and a pulse oximeter (spo2 + pulse_rate, 1 Hz,
device status with battery every 5 min). Healthy stretches have sensor noise and rare unflagged
single-sample spikes; events are placed without overlap:

* clinical, should page: ``desaturation`` (ramp to 82-87 %, minutes), ``severe_desaturation``
  (to 72-78 %), ``tachycardia`` (140-160 /min), ``bradycardia`` (34-38 /min);
* clinical, should not page: ``brief_dip`` (SpO2 86-88 % for 4-12 s);
* artefact, should not page: ``motion`` (erratic PPG: pulse rate off by 20-60 /min, spuriously low
  SpO2, part of it flagged questionable);
* technical, should page a technical alarm: ``sensor_off`` (two garbage readings, then no value
  with sensor_unconnected), ``out_of_range`` (oximeter disconnected, no data), ``low_battery``.

The ground truth's ``start`` is when the true value crosses the default limit (or the artefact
starts), ``end`` when it is back. This stands in for the firmware simulator's scenario library until
that exists; the ground-truth line format is the same.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from wardwatch.core.groundtruth import GroundTruthEvent as TruthEvent
from wardwatch.core.groundtruth import Kind
from wardwatch.core.schema import DeviceRole, DeviceStatus, Quality, Sample, Signal, Vitals, WireMessage

CLINICAL_EVENTS = ("desaturation", "severe_desaturation", "tachycardia", "bradycardia", "brief_dip")
ARTEFACT_EVENTS = ("motion",)
TECHNICAL_EVENTS = ("sensor_off", "out_of_range", "low_battery")


@dataclass(slots=True)
class Scenario:
    """Messages (time-ordered, each with its ward) and the ground truth."""

    messages: list[tuple[str, WireMessage]] = field(default_factory=list)
    truth: list[TruthEvent] = field(default_factory=list)
    patients: int = 0
    start: int = 0
    end: int = 0

    @property
    def samples(self) -> int:
        """Number of samples in the vitals messages."""
        return sum(len(m.samples) for _, m in self.messages if isinstance(m, Vitals))


def _time_of(item: tuple[str, WireMessage]) -> int:
    msg = item[1]
    if isinstance(msg, Vitals):
        return msg.samples[0].t
    assert isinstance(msg, DeviceStatus)
    return msg.t


def _plan(rng: random.Random, seconds: int, mix: tuple[str, ...], per_hour: float) -> list[tuple[str, int, int]]:
    """Non-overlapping (event, start_s, duration_s) with at least 10 min between events."""
    out: list[tuple[str, int, int]] = []
    t = rng.randint(300, 900) if seconds > 1800 else rng.randint(10, max(11, seconds // 3))
    while True:
        event = rng.choice(mix)
        duration = {
            "desaturation": rng.randint(120, 360),
            "severe_desaturation": rng.randint(50, 120),
            "tachycardia": rng.randint(240, 600),
            "bradycardia": rng.randint(80, 200),
            "brief_dip": rng.randint(4, 12),
            "motion": rng.randint(20, 90),
            "sensor_off": rng.randint(45, 300),
            "out_of_range": rng.randint(90, 300),
            "low_battery": 600,
        }[event]
        if t + duration + 60 >= seconds:
            return out
        out.append((event, t, duration))
        t += duration + max(600, round(rng.expovariate(per_hour / 3600.0))) if per_hour > 0 else seconds


def patient_scenario(
    patient: str,
    ward: str,
    gateway: str,
    start_ms: int,
    seconds: int,
    seed: int,
    mix: tuple[str, ...] = CLINICAL_EVENTS + ARTEFACT_EVENTS + TECHNICAL_EVENTS,
    events_per_hour: float = 2.0,
) -> Scenario:
    """One patient's messages and ground truth."""
    rng = random.Random(seed)
    strap, oxi = f"{patient}-hr", f"{patient}-ox"
    spo2 = [0.0] * seconds
    hr = [0.0] * seconds
    base_s, base_h = rng.uniform(95.0, 97.5), rng.uniform(62.0, 88.0)
    for i in range(seconds):  # slow wander around the personal baseline
        base_s += rng.gauss(0.0, 0.02) + 0.001 * (96.5 - base_s)
        base_h += rng.gauss(0.0, 0.1) + 0.002 * (75.0 - base_h)
        spo2[i] = min(99.5, base_s)
        hr[i] = base_h
    off = [False] * seconds  # oximeter sensor off
    silent = [False] * seconds  # oximeter out of range
    motion = [False] * seconds
    low_battery = [False] * seconds
    truth: list[TruthEvent] = []

    def ramp(arr: list[float], t0: int, dur: int, target: float, edge: int) -> None:
        for i in range(t0, min(seconds, t0 + dur)):
            k = i - t0
            w = min(1.0, k / edge, (dur - k) / edge)
            arr[i] = arr[i] + (target - arr[i]) * max(0.0, w)

    for event, t0, dur in _plan(rng, seconds, mix, events_per_hour):
        kind: Kind = "clinical"
        page, lo, hi = True, t0, t0 + dur
        if event == "desaturation":
            ramp(spo2, t0, dur, rng.uniform(82.0, 87.0), 30)
        elif event == "severe_desaturation":
            ramp(spo2, t0, dur, rng.uniform(72.0, 78.0), 10)
        elif event == "tachycardia":
            ramp(hr, t0, dur, rng.uniform(140.0, 160.0), 60)
        elif event == "bradycardia":
            ramp(hr, t0, dur, rng.uniform(34.0, 38.0), 20)
        elif event == "brief_dip":
            ramp(spo2, t0, dur, rng.uniform(86.0, 88.0), max(1, dur // 2))
            page = False
        elif event == "motion":
            kind, page = "artefact", False
            for i in range(t0, t0 + dur):
                motion[i] = True
        else:
            kind = "technical"
            if event == "sensor_off":
                for i in range(t0, t0 + dur):
                    off[i] = True
            elif event == "out_of_range":
                for i in range(t0, t0 + dur):
                    silent[i] = True
            else:
                for i in range(t0, t0 + dur):
                    low_battery[i] = True
        if event in ("desaturation", "severe_desaturation", "brief_dip"):
            below = [i for i in range(t0, t0 + dur) if spo2[i] < 90.0]
            lo, hi = (below[0], below[-1] + 1) if below else (t0, t0 + dur)
        elif event == "tachycardia":
            beyond = [i for i in range(t0, t0 + dur) if hr[i] > 130.0]
            lo, hi = beyond[0], beyond[-1] + 1
        elif event == "bradycardia":
            beyond = [i for i in range(t0, t0 + dur) if hr[i] < 40.0]
            lo, hi = beyond[0], beyond[-1] + 1
        truth.append(TruthEvent(patient, event, kind, start_ms + lo * 1000, start_ms + hi * 1000, page))

    messages: list[tuple[str, WireMessage]] = []
    seq = {Signal.SPO2: 0, Signal.PULSE_RATE: 0, Signal.HEART_RATE: 0}

    def vit(device: str, signal: Signal, t: int, v: float | None, q: tuple[Quality, ...] = ()) -> None:
        seq[signal] += 1
        sample = Sample(t=t, v=v, q=q)
        messages.append(
            (
                ward,
                Vitals(
                    patient=patient,
                    device=device,
                    gateway=gateway,
                    signal=signal,
                    seq=seq[signal],
                    samples=(sample,),
                ),
            )
        )

    battery = rng.uniform(60.0, 100.0)
    off_run = 0
    for i in range(seconds):
        t = start_ms + i * 1000 + 137
        true_s, true_h = spo2[i], hr[i]
        # strap: ECG HR, rarely a spike
        h = true_h + rng.gauss(0.0, 1.5)
        if rng.random() < 1 / 900:
            h += rng.choice((-1, 1)) * rng.uniform(40.0, 70.0)
        vit(strap, Signal.HEART_RATE, t + 50, round(max(20.0, min(250.0, h))))
        if i % 300 == 0:
            if low_battery[i]:
                battery = max(3.0, min(battery, 16.0) - 3.0)
            elif battery < 20.0:
                battery = 95.0  # recharged / swapped after the low-battery episode
            else:
                battery = max(20.0, battery - 0.3)
            messages.append(
                (
                    ward,
                    DeviceStatus(
                        patient=patient,
                        device=oxi,
                        gateway=gateway,
                        t=t,
                        role=DeviceRole.PULSE_OXIMETER,
                        connected=not silent[i],
                        battery=round(battery),
                    ),
                )
            )
        if silent[i]:
            continue
        if off[i]:
            off_run += 1
            if off_run <= 2:  # the reading as the probe slides off: unflagged garbage
                vit(oxi, Signal.SPO2, t, rng.uniform(55.0, 75.0))
                vit(oxi, Signal.PULSE_RATE, t, rng.uniform(30.0, 180.0))
            else:
                vit(oxi, Signal.SPO2, t, None, (Quality.SENSOR_UNCONNECTED,))
                vit(oxi, Signal.PULSE_RATE, t, None, (Quality.SENSOR_UNCONNECTED,))
            continue
        off_run = 0
        s = true_s + rng.gauss(0.0, 0.6)
        p = true_h + rng.gauss(0.0, 2.0)
        q: tuple[Quality, ...] = ()
        if motion[i]:
            p = true_h + rng.choice((-1, 1)) * rng.uniform(20.0, 60.0)
            s = true_s - rng.uniform(3.0, 15.0)
            if rng.random() < 0.35:
                q = (Quality.QUESTIONABLE,)
        elif rng.random() < 1 / 600:
            s -= rng.uniform(10.0, 25.0)
        vit(oxi, Signal.SPO2, t, round(max(50.0, min(100.0, s))), q)
        vit(oxi, Signal.PULSE_RATE, t, round(max(20.0, min(250.0, p))), q)
    return Scenario(messages, truth, 1, start_ms, start_ms + seconds * 1000)


def scenario_library(
    patients: int,
    hours: float,
    seed: int = 1,
    ward: str = "ward-a",
    start_ms: int = 1_767_225_600_000,
    mix: tuple[str, ...] = CLINICAL_EVENTS + ARTEFACT_EVENTS + TECHNICAL_EVENTS,
    events_per_hour: float = 2.0,
) -> Scenario:
    """Several patients' scenarios merged in time order (5 patients per gateway)."""
    seconds = round(hours * 3600)
    parts = [
        patient_scenario(
            f"p-{n:04d}", ward, f"gw-{n // 5:03d}", start_ms, seconds, seed * 100_003 + n, mix, events_per_hour
        )
        for n in range(patients)
    ]
    merged = Scenario(patients=patients, start=start_ms, end=start_ms + seconds * 1000)
    merged.messages = list(heapq.merge(*(p.messages for p in parts), key=_time_of))
    merged.truth = [e for p in parts for e in p.truth]
    return merged


def iter_jsonl_truth(truth: list[TruthEvent]) -> Iterator[dict[str, object]]:
    """Ground truth as JSON-ready dicts."""
    for e in truth:
        yield {
            "patient": e.patient,
            "event": e.event,
            "kind": e.kind,
            "start": e.start,
            "end": e.end,
            "should_page": e.should_page,
        }
