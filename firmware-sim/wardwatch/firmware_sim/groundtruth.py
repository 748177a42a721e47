"""Ground truth: which clinical events, artefacts and technical faults a scenario contains, and when.

One JSON object per line (format documented in ``firmware-sim/README.md``)::

    {"patient": "p-001", "event": "desaturation", "kind": "clinical", "start": 1736150700000,
     "end": 1736150940000, "should_page": true, "devices": ["plx-001"], "detail": {...}}

``start``/``end`` are ms since the Unix epoch (``end`` exclusive). ``should_page`` says whether a
good alarm system should page a nurse for it (default rules below; a scenario may override).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import numpy as np

from wardwatch.core.groundtruth import GroundTruthEvent

from .model import Track, envelope
from .scenario import (
    ARTEFACT_EVENTS,
    CLINICAL_EVENTS,
    CUFF_ONLY,
    OXIMETER_ONLY,
    SPOT_CHECK_KINDS,
    SPOT_CLINICAL_EVENTS,
    DeviceKind,
    EventKind,
    EventSpec,
    PatientSpec,
    Scenario,
)

__all__ = [
    "LOW_BATTERY_PERCENT",
    "GroundTruthEvent",
    "dump_jsonl",
    "ground_truth",
    "load_jsonl",
]

LOW_BATTERY_PERCENT: Final = 20
SPO2_PAGE_LIMIT: Final = 90.0  # desaturation pages when below this ...
SPO2_PAGE_SECONDS: Final = 15  # ... for at least this long: the engine's default delay (Welch 2011: 15 s removes ~70 %)
TACHY_PAGE_BPM: Final = 130.0  # NEWS2 pulse score 3 at >= 131
BRADY_PAGE_BPM: Final = 40.0  # NEWS2 pulse score 3 at <= 40
HR_PAGE_SECONDS: Final = 30
# spot checks: the engine's defaults (bp_systolic_low, temp_high, temp_low); one valid reading decides
BP_PAGE_SYSTOLIC: Final = 90.0
FEVER_PAGE_C: Final = 39.1
HYPOTHERMIA_PAGE_C: Final = 35.0
SPOT_PAGE_SLACK_MS: Final = 60_000  # from the reading that shows the episode to its page
TECHNICAL_PAGE_SECONDS: Final = 120  # a sensor off / device silent this long needs a nurse

Kind = Literal["clinical", "artefact", "technical"]


def _kind(event: EventKind) -> Kind:
    if event in CLINICAL_EVENTS:
        return "clinical"
    if event in ARTEFACT_EVENTS:
        return "artefact"
    return "technical"


def _spot_kind(event: EventKind) -> DeviceKind:
    return DeviceKind.BLOOD_PRESSURE_CUFF if event == EventKind.HYPOTENSION else DeviceKind.THERMOMETER


def _affected(patient: PatientSpec, event: EventSpec) -> tuple[str, ...]:
    if event.device is not None:
        return (event.device,)
    if event.kind in SPOT_CLINICAL_EVENTS:
        return tuple(d.id for d in patient.devices if d.kind == _spot_kind(event.kind))
    if event.kind in CUFF_ONLY:
        return tuple(d.id for d in patient.devices if d.kind == DeviceKind.BLOOD_PRESSURE_CUFF)
    if event.kind in CLINICAL_EVENTS:
        return ()
    if event.kind in OXIMETER_ONLY:
        return tuple(d.id for d in patient.devices if d.kind == DeviceKind.PULSE_OXIMETER)
    return tuple(d.id for d in patient.devices)


def _default_should_page(patient: PatientSpec, event: EventSpec) -> tuple[bool, dict[str, Any]]:
    base = patient.baseline
    t = np.arange(0.0, event.end + 1.0, 1.0)
    if event.kind == EventKind.DESATURATION:
        assert event.target is not None
        curve = base.spo2 - envelope(t, event) * (base.spo2 - event.target)
        below = int((curve < SPO2_PAGE_LIMIT).sum())
        return below >= SPO2_PAGE_SECONDS, {"target_spo2": event.target, "seconds_below_90": below}
    if event.kind == EventKind.BRIEF_DIP:
        return False, {"target_spo2": event.target if event.target is not None else 86.0}
    if event.kind == EventKind.TACHYCARDIA:
        assert event.target is not None
        curve = base.hr + envelope(t, event) * (event.target - base.hr)
        above = int((curve > TACHY_PAGE_BPM).sum())
        return above >= HR_PAGE_SECONDS, {"target_hr": event.target, "seconds_above_130": above}
    if event.kind == EventKind.BRADYCARDIA:
        assert event.target is not None
        curve = base.hr + envelope(t, event) * (event.target - base.hr)
        below = int((curve <= BRADY_PAGE_BPM).sum())
        return below >= HR_PAGE_SECONDS, {"target_hr": event.target, "seconds_at_or_below_40": below}
    if event.kind in ARTEFACT_EVENTS:
        return False, {"severity": event.severity} if event.kind == EventKind.MOTION else {}
    if event.kind in {EventKind.OUT_OF_RANGE, EventKind.BUSY} and all(
        d.kind in SPOT_CHECK_KINDS for d in patient.devices if d.id in _affected(patient, event)
    ):
        # a cuff or thermometer sleeps between readings: its absence is its normal state, nobody can tell
        return False, {"spot_check_devices_only": True}
    return event.end - event.at >= TECHNICAL_PAGE_SECONDS, {}


def _spot_should_page(
    patient: PatientSpec, event: EventSpec, start_ms: int, tracks: Sequence[Track]
) -> tuple[bool, dict[str, Any]]:
    """A spot-check episode pages when a reading the device did not flag, taken during it, shows it.

    Between readings nobody can know: an episode no valid reading falls in is not expected to page.
    """
    from .spot_track import SpotTrack  # it builds on the model, like this module

    kind = _spot_kind(event.kind)

    def beyond(value: float) -> bool:
        if event.kind == EventKind.HYPOTENSION:
            return value <= BP_PAGE_SYSTOLIC
        return value >= FEVER_PAGE_C if event.kind == EventKind.FEVER else value <= HYPOTHERMIA_PAGE_C

    readings = [
        r
        for track in tracks
        if isinstance(track, SpotTrack) and track.patient.id == patient.id and track.device.kind == kind
        for r in track.readings
        if event.at <= r.index + 1 < event.end and not r.artefact
    ]
    showing = [r for r in readings if beyond(r.truth)]
    detail: dict[str, Any] = {"target": event.target, "valid_readings": len(readings), "readings_beyond": len(showing)}
    if showing:
        detail["first_reading_ms"] = start_ms + (showing[0].index + 1) * 1000
    return bool(showing), detail


def _battery_events(scenario: Scenario, tracks: Sequence[Track]) -> list[GroundTruthEvent]:
    out: list[GroundTruthEvent] = []
    end_ms = scenario.start_ms + round(scenario.duration * 1000)
    for track in tracks:
        low = np.flatnonzero(track.battery <= LOW_BATTERY_PERCENT)
        off = np.flatnonzero(~track.powered)
        pid, did = track.patient.id, track.device.id
        if low.size:
            stop = track.t_ms(int(off[0])) if off.size else end_ms
            out.append(
                GroundTruthEvent(
                    patient=pid,
                    event="low_battery",
                    kind="technical",
                    start=track.t_ms(int(low[0])),
                    end=stop,
                    should_page=False,
                    devices=(did,),
                    detail={"threshold_percent": LOW_BATTERY_PERCENT},
                )
            )
        if off.size:
            out.append(
                GroundTruthEvent(
                    patient=pid,
                    event="battery_depleted",
                    kind="technical",
                    start=track.t_ms(int(off[0])),
                    end=end_ms,
                    should_page=True,
                    devices=(did,),
                    detail={"device_off": True},
                )
            )
    return out


def ground_truth(scenario: Scenario, tracks: Sequence[Track]) -> list[GroundTruthEvent]:
    """Every ground-truth event of the scenario, sorted by start time.

    Battery events (``low_battery``, ``battery_depleted``) are derived from the simulated battery;
    ``battery_drain`` timeline entries do not appear themselves.
    """
    events: list[GroundTruthEvent] = []
    start = scenario.start_ms
    for patient in scenario.patients:
        for event in patient.events:
            if event.kind == EventKind.BATTERY_DRAIN:
                continue
            if event.kind in SPOT_CLINICAL_EVENTS:
                should_page, detail = _spot_should_page(patient, event, start, tracks)
            else:
                should_page, detail = _default_should_page(patient, event)
            if event.should_page is not None:
                should_page = event.should_page
            detail = {"onset_s": event.onset, "hold_s": event.duration, "recovery_s": event.recovery, **detail}
            max_delay = None
            if "first_reading_ms" in detail:  # a spot check can only page at the first reading that shows it
                onset_end = start + round((event.at + event.onset) * 1000)
                max_delay = max(0, int(detail["first_reading_ms"]) - onset_end) + SPOT_PAGE_SLACK_MS
            events.append(
                GroundTruthEvent(
                    patient=patient.id,
                    event=str(event.kind),
                    kind=_kind(event.kind),
                    # notification i is sent at start + (i + 1) s and covers (i, i + 1]
                    start=start + round(event.at * 1000),
                    end=start + round(min(event.end, scenario.duration) * 1000),
                    should_page=should_page,
                    devices=_affected(patient, event),
                    detail=detail,
                    max_delay=max_delay,
                )
            )
    events.extend(_battery_events(scenario, tracks))
    events.sort(key=lambda e: (e.start, e.patient, e.event))
    return events


_encoder: Final = msgspec.json.Encoder()


def dump_jsonl(events: Iterable[GroundTruthEvent], path: Path) -> None:
    """Write ground truth as JSON lines."""
    with path.open("wb") as out:
        for event in events:
            out.write(_encoder.encode(event) + b"\n")


def load_jsonl(path: Path) -> list[GroundTruthEvent]:
    """Read ground truth written by :func:`dump_jsonl`."""
    decoder = msgspec.json.Decoder(GroundTruthEvent)
    return [decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]
