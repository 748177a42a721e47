"""Spot-check readings as FHIR R4 vital-signs Observations: one per reading, never summarised.

A cuff reading is one blood-pressure panel (FHIR vital-signs profile ``bp``): code LOINC 85354-9 (with
the IEEE 11073 MDC_PRESS_BLD_NONINV 150020), no value of its own, and components systolic (8480-6, MDC
150021), diastolic (8462-4, MDC 150022) and mean (8478-0, MDC 150023) in ``mm[Hg]``. The three pressures
reach the exporter as three signals; they share one window (:data:`~wardwatch.fhir.mapping.PANEL_OF`)
and are joined by their common reading time. A thermometer reading is a body temperature (``bodytemp``):
LOINC 8310-5, MDC_TEMP_BODY 150364, ``Cel``. Both carry ``effectiveDateTime``: the device's own
timestamp when it had a set clock (readings stored while the gateway was away keep it), else the
gateway's time of reception.

Device status: a reading the cuff flagged (body movement, loose cuff, improper position) or the sensor
called questionable keeps its value with ``interpretation`` questionable (PHD measurement status); an
invalid or missing pressure is a component with ``dataAbsentReason`` (the panel still has its systolic
and diastolic components, as the ``bp`` profile requires). No value is ever invented.

The identifier (conditional create) is ``{patient}/{device}/{MDC code}/reading/{t}``: a redelivered or
backfilled reading is stored once.
"""

from __future__ import annotations

from typing import Final

from wardwatch.core.schema import Quality, Sample, Signal
from wardwatch.fhir.config import ExportSettings
from wardwatch.fhir.mapping import (
    DATA_ABSENT_REASON,
    LOINC,
    MDC,
    MEASUREMENT_STATUS,
    OBSERVATION_CATEGORY,
    QUESTIONABLE_FLAGS,
    Resource,
    Window,
    _absent_reason,
    _coding,
    _instant,
    _is_valid,
    _number,
    _quantity,
)

__all__ = ["BLOOD_PRESSURE_PANEL", "BODY_TEMPERATURE", "COMPONENTS", "spot_observations"]

Code = tuple[str, str, str, str]  # MDC code, MDC reference id, LOINC code, LOINC display

BLOOD_PRESSURE_PANEL: Final[Code] = (
    "150020",
    "MDC_PRESS_BLD_NONINV",
    "85354-9",
    "Blood pressure panel with all children optional",
)
COMPONENTS: Final[dict[Signal, Code]] = {
    Signal.SYSTOLIC_BP: ("150021", "MDC_PRESS_BLD_NONINV_SYS", "8480-6", "Systolic blood pressure"),
    Signal.DIASTOLIC_BP: ("150022", "MDC_PRESS_BLD_NONINV_DIA", "8462-4", "Diastolic blood pressure"),
    Signal.MEAN_ARTERIAL_PRESSURE: ("150023", "MDC_PRESS_BLD_NONINV_MEAN", "8478-0", "Mean blood pressure"),
}
BODY_TEMPERATURE: Final[Code] = ("150364", "MDC_TEMP_BODY", "8310-5", "Body temperature")
MMHG: Final = "mm[Hg]"
CELSIUS: Final = "Cel"
#: Besides the sensor's own "questionable": the cuff's status bits make a reading questionable, not invalid.
SPOT_QUESTIONABLE: Final = QUESTIONABLE_FLAGS | {Quality.BODY_MOVEMENT, Quality.CUFF_LOOSE, Quality.IMPROPER_POSITION}
_MISSING: Final = {"coding": [_coding(DATA_ABSENT_REASON, "unknown", "Unknown")]}


def _code(code: Code) -> Resource:
    mdc, mdc_display, loinc, loinc_display = code
    return {"coding": [_coding(MDC, mdc, mdc_display), _coding(LOINC, loinc, loinc_display)]}


def _value(resource: Resource, sample: Sample | None, unit: str) -> None:
    """``valueQuantity`` of a valid sample, else ``dataAbsentReason`` (never an invented value)."""
    if sample is None:
        resource["dataAbsentReason"] = _MISSING
    elif _is_valid(sample) and sample.v is not None:
        resource["valueQuantity"] = _quantity(_number(sample.v), unit)
    else:
        resource["dataAbsentReason"] = _absent_reason([sample])


def _questionable(samples: list[Sample | None]) -> list[Resource]:
    if any(s is not None and _is_valid(s) and SPOT_QUESTIONABLE.intersection(s.q) for s in samples):
        return [{"coding": [_coding(MEASUREMENT_STATUS, "questionable", "Questionable")]}]
    return []


def _reading(window: Window, code: Code, t: int, settings: ExportSettings) -> tuple[Resource, str]:
    value = f"{window.patient}/{window.device}/{code[0]}/reading/{t}"
    resource: Resource = {
        "resourceType": "Observation",
        "identifier": [{"system": settings.identifiers.observation, "value": value}],
        "status": "final",
        "category": [{"coding": [_coding(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")]}],
        "code": _code(code),
        "effectiveDateTime": _instant(t),
    }
    return resource, f"{settings.identifiers.observation}|{value}"


def _panel(window: Window, t: int, settings: ExportSettings) -> tuple[Resource, str]:
    resource, identifier = _reading(window, BLOOD_PRESSURE_PANEL, t, settings)
    parts = {Signal.SYSTOLIC_BP: window.samples.get(t)}
    for signal in (Signal.DIASTOLIC_BP, Signal.MEAN_ARTERIAL_PRESSURE):
        parts[signal] = window.components.get(signal, {}).get(t)
    components = []
    for signal, code in COMPONENTS.items():
        sample = parts[signal]
        if sample is None and signal is Signal.MEAN_ARTERIAL_PRESSURE:
            continue  # optional in the panel; systolic and diastolic are always there
        component: Resource = {"code": _code(code)}
        _value(component, sample, MMHG)
        components.append(component)
    resource["component"] = components
    interpretation = _questionable(list(parts.values()))
    if interpretation:
        resource["interpretation"] = interpretation
    return resource, identifier


def spot_observations(window: Window, settings: ExportSettings) -> list[tuple[Resource, str]]:
    """One Observation per reading of a cuff (BP panel) or thermometer window, in time order."""
    if window.signal is Signal.BODY_TEMPERATURE:
        out = []
        for t, sample in sorted(window.samples.items()):
            resource, identifier = _reading(window, BODY_TEMPERATURE, t, settings)
            _value(resource, sample, CELSIUS)
            interpretation = _questionable([sample])
            if interpretation:
                resource["interpretation"] = interpretation
            out.append((resource, identifier))
        return out
    times = set(window.samples)
    for samples in window.components.values():
        times |= set(samples)
    return [_panel(window, t, settings) for t in sorted(times)]
